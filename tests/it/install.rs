//! `make install` into a staging root (`DESTDIR`), as README.md's Install section describes it:
//! the binary, the hooks, the units and the example configuration where the examples name them,
//! with their modes; the units start the installed binary; the example configuration passes the
//! installed binary's `check` once its paths point into the staging root.
//!
//! The test's own certkeeper binary is installed (`BIN=`), so that no build runs here. Without
//! `make` the test says so and returns, unless `CERTKEEPER_REQUIRE_SERVERS=1` (set by .ci/run,
//! which installs it) makes that a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::*;

/// The absolute paths the example configuration and the units name, each with what the
/// installed file must be.
const HOOKDIR: &str = "/usr/share/certkeeper/hooks";
const UNITDIR: &str = "lib/systemd/system";

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{} is not installed: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[track_caller]
fn assert_mode(path: &Path, expected: u32) {
    let mode = mode(path);
    assert_eq!(mode, expected, "{} has mode {mode:o}, not {expected:o}", path.display());
}

/// `make install DESTDIR=dest BIN=<the test's binary>` in the checkout, with none of the
/// Makefile's variables taken from this environment.
fn make_install(dest: &Path) -> Output {
    let out = Command::new("make")
        .arg("-C")
        .arg(env!("CARGO_MANIFEST_DIR"))
        .arg("install")
        .arg(format!("DESTDIR={}", dest.display()))
        .arg(format!("BIN={BIN}"))
        .env_remove("MAKEFLAGS")
        .env_remove("MFLAGS")
        .env_remove("PREFIX")
        .env_remove("BINDIR")
        .env_remove("HOOKDIR")
        .env_remove("DOCDIR")
        .env_remove("UNITDIR")
        .env_remove("CONFDIR")
        .env_remove("STATEDIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    out
}

/// `dest` followed by an absolute path.
fn under(dest: &Path, abs: &str) -> PathBuf {
    dest.join(abs.trim_start_matches('/'))
}

#[test]
fn make_install_lays_out_every_file_with_its_mode_and_the_example_config_passes_check() {
    let test = "make_install_lays_out_every_file_with_its_mode_and_the_example_config_passes_check";
    if Command::new("make").arg("--version").output().is_err() {
        skip(
            test,
            "make is not installed (Debian: apt-get install make; .ci/run installs it)",
        );
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dest = std::env::temp_dir().join(format!("certkeeper-it-install-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).unwrap();
    make_install(&dest);

    // The binary, and every shipped hook.
    let bin = under(&dest, "/usr/bin/certkeeper");
    assert_mode(&bin, 0o755);
    let mut hooks = 0;
    for entry in std::fs::read_dir(repo.join("hooks")).unwrap() {
        let name = entry.unwrap().file_name();
        let hook = under(&dest, HOOKDIR).join(&name);
        assert_mode(&hook, 0o755);
        assert_eq!(
            std::fs::read(&hook).unwrap(),
            std::fs::read(repo.join("hooks").join(&name)).unwrap()
        );
        hooks += 1;
    }
    assert!(hooks >= 3, "only {hooks} hooks in hooks/");

    // Every unit in examples/, 0644, starting the installed binary, documented where it says.
    let mut units = 0;
    for entry in std::fs::read_dir(repo.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if !(name.ends_with(".service") || name.ends_with(".timer")) {
            continue;
        }
        let unit = dest.join(UNITDIR).join(&name);
        assert_mode(&unit, 0o644);
        let text = std::fs::read_to_string(&unit).unwrap();
        for line in text.lines() {
            if let Some(cmd) = ["ExecStart=", "ExecStartPre="]
                .iter()
                .find_map(|k| line.strip_prefix(k))
            {
                let program = cmd
                    .trim_start_matches(['-', '@', ':', '+', '!'])
                    .split_whitespace()
                    .next()
                    .unwrap();
                let installed = under(&dest, program);
                assert!(
                    mode(&installed) & 0o111 != 0,
                    "{name} runs {program}, which make install does not install"
                );
            }
            if let Some(doc) = line.strip_prefix("Documentation=file://") {
                assert!(
                    under(&dest, doc).is_file(),
                    "{name} points at {doc}, which is not installed"
                );
            }
        }
        units += 1;
    }
    assert!(units >= 3, "only {units} units in examples/");

    // The directories, with modes certkeeper accepts, and the example configuration.
    assert_mode(&under(&dest, "/etc/certkeeper"), 0o755);
    assert_mode(&under(&dest, "/etc/certkeeper/live"), 0o755);
    assert_mode(&under(&dest, "/var/lib/certkeeper"), 0o700);
    let config = under(&dest, "/etc/certkeeper/certkeeper.toml");
    assert_mode(&config, 0o644);
    let example = std::fs::read_to_string(repo.join("examples/certkeeper.toml")).unwrap();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), example);

    // Every hook the example configuration names is one that was installed.
    let mut named = 0;
    for (at, _) in example.match_indices(HOOKDIR) {
        let path: String = example[at..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"')
            .collect();
        assert_mode(&under(&dest, &path), 0o755);
        named += 1;
    }
    assert!(named >= 2, "the example config names {named} hooks");

    // The operator's steps: the password file, then `check` by the installed binary, with the
    // example's paths moved into the staging root.
    let mut text = example.clone();
    for prefix in ["/etc/certkeeper", "/var/lib/certkeeper", "/usr/share/certkeeper"] {
        text = text.replace(prefix, &under(&dest, prefix).display().to_string());
    }
    assert_ne!(text, example);
    std::fs::write(&config, &text).unwrap();
    let password = under(&dest, "/etc/certkeeper/api-password");
    std::fs::write(&password, "secret\n").unwrap();
    std::fs::set_permissions(&password, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The example reloads with `systemctl`, which `check` looks up in PATH: a host the units
    // are for has it; a container running the tests may not, so a stand-in is put last in PATH.
    let stand_in = under(&dest, "/stand-in");
    std::fs::create_dir_all(&stand_in).unwrap();
    std::fs::write(stand_in.join("systemctl"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(stand_in.join("systemctl"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", std::env::var("PATH").unwrap_or_default(), stand_in.display());
    let out = Command::new(&bin)
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("PATH", path)
        .env_remove("CERTKEEPER_API_PASSWORD")
        .env_remove("CERTKEEPER_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let certificates = example.lines().filter(|l| l.trim() == "[[certificate]]").count();
    assert!(
        out.status.success()
            && String::from_utf8_lossy(&out.stdout)
                .contains(&format!("configuration is valid ({certificates} certificate(s))")),
        "check of the installed example config failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );

    // A second install leaves the operator's configuration as it is.
    let again = make_install(&dest);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert!(String::from_utf8_lossy(&again.stdout).contains("left as it is"));
    let _ = std::fs::remove_dir_all(&dest);
}
