//! A hostile host: an unprivileged local user prepares directories, links and files where root's
//! certkeeper will look, and certkeeper refuses them instead of writing through them.
//!
//! The attacker's steps run as user `nobody` through `setpriv`, so these tests need root. Where
//! certkeeper's tests do not run as root they say so and return, unless
//! `CERTKEEPER_REQUIRE_SERVERS=1` (set by .ci/run, which runs as root) makes that a failure.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::support::*;

const NOBODY: &str = "65534";

/// Whether the tests can play another user; if not, the test is skipped (or fails in CI).
fn as_root(test: &str) -> bool {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let setpriv = Path::new("/usr/bin/setpriv").exists();
    if root && setpriv {
        return true;
    }
    let why = format!(
        "{test}: skipped because it must run as root with setpriv (util-linux) to act as another user; .ci/run does"
    );
    assert!(
        std::env::var_os("CERTKEEPER_REQUIRE_SERVERS").is_none(),
        "{why}, and CERTKEEPER_REQUIRE_SERVERS is set"
    );
    // Straight to stderr, past the test harness's capture, so that a skip is seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{why}");
    false
}

/// Runs a shell command as user nobody: what an unprivileged local user can do.
#[track_caller]
fn as_nobody(script: &str) {
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "--",
            "sh",
            "-c",
            script,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "as nobody: {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory anyone may create entries in, as /tmp: root's, sticky, 1777.
fn shared_dir(env: &TestEnv) -> std::path::PathBuf {
    let d = env.dir.join("shared");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

/// Points the config's state or live directory elsewhere.
fn set_dirs(env: &TestEnv, state: &Path, live: &Path) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let text = text
        .replace("state_dir = \"state\"", &format!("state_dir = \"{}\"", state.display()))
        .replace("live_dir = \"live\"", &format!("live_dir = \"{}\"", live.display()));
    std::fs::write(env.config_path(), text).unwrap();
}

/// A file root cares about, to show it is never written through a planted link.
fn victim(env: &TestEnv) -> std::path::PathBuf {
    let v = env.dir.join("victim");
    std::fs::write(&v, "precious\n").unwrap();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_links_another_user_planted_are_refused_and_nothing_is_written_through_them() {
    if !as_root("directories_and_links_another_user_planted") {
        return;
    }
    let env = TestEnv::start("host-dirs").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    let shared = shared_dir(&env);
    let victim = victim(&env);
    let vdir = env.dir.join("victim-dir");
    std::fs::create_dir_all(&vdir).unwrap();
    std::fs::write(vdir.join("keep"), "root's\n").unwrap();

    // 1. The state directory made by another user, its lock a link to a file of root's: the
    //    lock used to truncate the victim and write certkeeper's PID into it.
    as_nobody(&format!(
        "mkdir {0}/state && ln -s {1} {0}/state/lock",
        shared.display(),
        victim.display()
    ));
    set_dirs(&env, &shared.join("state"), &env.dir.join("live"));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("belongs to user 65534"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");

    // 2. The live directory made by another user, with a link in place of the certificate's
    //    generations: certkeeper used to write keys into the link's target and prune it.
    as_nobody(&format!(
        "mkdir -p {0}/live/.generations && ln -s {1} {0}/live/.generations/{name}",
        shared.display(),
        vdir.display()
    ));
    env.write_config(&[Cert::autodns(name)], "");
    set_dirs(&env, &env.dir.join("state"), &shared.join("live"));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("belongs to user 65534"), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(&vdir).unwrap().count(),
        1,
        "something was written into the link's target"
    );
    assert_eq!(std::fs::read_to_string(vdir.join("keep")).unwrap(), "root's\n");

    // 3. A state directory of root's that anyone may write, and one under such a parent.
    let open_state = env.dir.join("open-state");
    std::fs::create_dir_all(&open_state).unwrap();
    std::fs::set_permissions(&open_state, std::fs::Permissions::from_mode(0o777)).unwrap();
    env.write_config(&[Cert::autodns(name)], "");
    set_dirs(&env, &open_state.join("state"), &env.dir.join("live"));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("writable by group or others"), "{}", stderr(&out));
    assert!(
        !open_state.join("state").exists(),
        "a state directory was made under a writable parent"
    );
    assert_eq!(env.paid(name), 0);

    // With directories of its own it works, from nothing, and the modes hold under umask 000.
    env.write_config(&[Cert::autodns(name)], "");
    let out = tokio::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" run --once", BIN])
        .env("CERTKEEPER_CONFIG", env.config_path())
        .env_remove("CERTKEEPER_API_PASSWORD")
        .current_dir(&env.dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed(name);
    let mode = |p: &str| std::fs::metadata(env.dir.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        (mode("state"), mode("state/certs"), mode("live")),
        (0o700, 0o700, 0o755)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_or_password_file_another_user_controls_is_refused() {
    if !as_root("a_config_or_password_file_another_user_controls") {
        return;
    }
    let env = TestEnv::start("host-files").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    let pw = env.dir.join("api-password");

    // A configuration anyone may write: its hooks would run as root.
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = env.run(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("writable by group or others"), "{}", stderr(&out));
    std::fs::set_permissions(env.config_path(), std::fs::Permissions::from_mode(0o644)).unwrap();

    // Another user's 0600 password file (mode bits alone used to pass).
    std::os::unix::fs::chown(&pw, Some(65534), Some(65534)).unwrap();
    let out = env.run(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("belongs to user 65534"), "{}", stderr(&out));
    std::os::unix::fs::chown(&pw, Some(0), Some(0)).unwrap();

    // A link in place of the password file.
    let real = env.dir.join("real-password");
    std::fs::rename(&pw, &real).unwrap();
    std::os::unix::fs::symlink(&real, &pw).unwrap();
    let out = env.run(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    std::fs::remove_file(&pw).unwrap();

    // A FIFO used to hang `check`.
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&pw)
            .status()
            .unwrap()
            .success()
    );
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let started = Instant::now();
    let out = env.run(&["check"], &[]).await;
    assert!(started.elapsed() < Duration::from_secs(10), "check hung on a FIFO");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a regular file"), "{}", stderr(&out));
    std::fs::remove_file(&pw).unwrap();
    std::fs::rename(&real, &pw).unwrap();
    env.run_ok(&["check"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_directory_at_the_live_name_is_found_before_paying_and_leftovers_are_swept() {
    let env = TestEnv::start("host-live").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    std::fs::create_dir_all(env.live(name)).unwrap();
    std::fs::write(env.live(name).join("cert.pem"), "the admin's own\n").unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("is a real directory"), "{}", stderr(&out));
    assert_eq!(env.paid(name), 0, "paid for a certificate it could not install");
    assert_eq!(
        std::fs::read_to_string(env.live(name).join("cert.pem")).unwrap(),
        "the admin's own\n"
    );

    // Moved away, it is issued; what a killed run or a full disk left behind is swept.
    std::fs::rename(env.live(name), env.dir.join("moved")).unwrap();
    std::fs::create_dir_all(env.dir.join("state/certs")).unwrap();
    std::fs::create_dir_all(env.dir.join(format!("live/.generations/{name}"))).unwrap();
    let leftovers = [
        "state/certs/.tmp-4242-00112233aabbccdd".to_string(),
        "live/.switch-4242-00112233aabbccdd".to_string(),
        format!("live/.generations/{name}/.tmp-0007-4242"),
    ];
    for l in &leftovers {
        std::fs::write(env.dir.join(l), "-----BEGIN PRIVATE KEY-----\n").unwrap();
    }
    // The killed run's PID is all its lock file says (no clean end), so the next run sweeps.
    std::fs::write(env.dir.join("state/lock"), "4242\n").unwrap();
    // (`run --once` would wait out the backoff of the failure above; the operator asks now.)
    env.run_ok(&["--renew-now", name]).await;
    env.assert_installed(name);
    assert_eq!(env.paid(name), 1);
    for l in &leftovers {
        assert!(!env.dir.join(l).exists(), "{l} was not swept");
    }
}

/// A web server running as another user could not read its key: it was always root's, 0600.
/// With `key_owner`, `key_group` and `key_mode`, the installed key is theirs to read, and still
/// nobody else's; certkeeper's own state stays root's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_installed_key_can_be_given_to_the_web_servers_user_and_no_one_else() {
    if !as_root("the_installed_key_can_be_given_to_the_web_servers_user_and_no_one_else") {
        return;
    }
    let env = TestEnv::start("key-access").await;
    env.write_config(
        &[Cert::autodns("www.example.com")],
        "key_owner = \"root\"\nkey_group = \"nogroup\"\nkey_mode = \"0640\"",
    );
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed_with_key_mode("www.example.com", 0o640);
    let key = env.live("www.example.com").join("privkey.pem");
    let stat = std::process::Command::new("stat")
        .args(["-L", "-c", "%U %G %a"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stat.stdout).trim(), "root nogroup 640");
    // The group reads it; a user outside the group does not.
    let read_as = |groups: &[&str]| {
        let mut cmd = std::process::Command::new("setpriv");
        cmd.args(["--reuid", NOBODY, "--regid", NOBODY]);
        if groups.is_empty() {
            cmd.arg("--clear-groups");
        } else {
            cmd.args(["--groups", &groups.join(",")]);
        }
        cmd.arg("--").arg("cat").arg(&key).output().unwrap()
    };
    let out = read_as(&[NOBODY]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("PRIVATE KEY"));
    let stranger = std::process::Command::new("setpriv")
        .args(["--reuid", "65533", "--regid", "65533", "--clear-groups", "--", "cat"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!stranger.status.success(), "a user outside the group read the key");
    // The state (with the journal's keys) is not the group's.
    let state = env.dir.join("state");
    let meta = std::fs::metadata(&state).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);

    // Taken back out of the configuration, the next run (with nothing due) makes the installed
    // key root's and 0600 again, without a reissue.
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.run_ok(&["run", "--once"]).await;
    let stat = std::process::Command::new("stat")
        .args(["-L", "-c", "%U %G %a"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&stat.stdout).trim(), "root root 600");
    assert!(!read_as(&[NOBODY]).status.success(), "the group still reads the key");
    assert_eq!(env.sim.control().ledger().len(), 1, "nothing was reissued for it");
}
