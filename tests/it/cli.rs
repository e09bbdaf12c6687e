use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_certkeeper_on_the_same_state_directory_refuses_and_names_the_first() {
    let env = TestEnv::start("lock").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let mut first = tokio::process::Command::new(BIN)
        .args(["run", "--once"])
        .env("CERTKEEPER_CONFIG", env.config_path())
        .env("CERTKEEPER_TEST_PAUSE_AT", "keyed")
        .current_dir(&env.dir)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = first.id().unwrap();
    let lock = env.dir.join("state/lock");
    for _ in 0..100 {
        if std::fs::read_to_string(&lock).is_ok_and(|s| s.trim() == pid.to_string()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("another certkeeper (PID {pid})")),
        "{}",
        stderr(&out)
    );
    // --renew-now hands over to a daemon only; a one-shot run has no control socket.
    let out = env.run(&["--renew-now", "www.example.com"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("another certkeeper (PID {pid})")) && stderr(&out).contains("no daemon answers"),
        "{}",
        stderr(&out)
    );
    first.start_kill().unwrap();
    let _ = first.wait().await;
    // Once the first is gone, the lock is free again and the order resumes.
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_with_no_network_and_no_credentials() {
    let dir = std::env::temp_dir().join(format!("certkeeper-it-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(BIN)
            .args(["demo", "--dir", "demo"])
            .current_dir(&dir)
            .env_remove("CERTKEEPER_CONFIG")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr(&out));
    assert!(stdout.contains("2 paid order(s), 1 free reissue(s)"), "{stdout}");
    for name in ["www.example.com", "shop.example.net"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(name) && l.ends_with("deployed")),
            "{stdout}"
        );
        let verify = std::process::Command::new("openssl")
            .args(["verify", "-CAfile", "demo/root.pem", "-untrusted"])
            .arg(format!("demo/live/{name}/chain.pem"))
            .arg(format!("demo/live/{name}/cert.pem"))
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stderr));
    }

    // `demo --dir /etc/certkeeper` used to overwrite the real configuration and password and
    // remove the real state and keys. A directory the demo did not make is refused...
    let real = dir.join("real");
    std::fs::create_dir_all(real.join("state")).unwrap();
    std::fs::write(real.join("certkeeper.toml"), "# the operator's\n").unwrap();
    std::fs::write(real.join("state/keep"), "state\n").unwrap();
    let demo = |args: &[&str]| {
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("demo")
            .args(args)
            .current_dir(&dir)
            .env_remove("CERTKEEPER_CONFIG")
            .kill_on_drop(true);
        async move {
            tokio::time::timeout(Duration::from_secs(120), cmd.output())
                .await
                .unwrap()
                .unwrap()
        }
    };
    let out = demo(&["--dir", "real"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("was not made by the demo") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read_to_string(real.join("certkeeper.toml")).unwrap(),
        "# the operator's\n"
    );
    assert!(real.join("state/keep").exists());
    // ...unless forced; and the demo's own directory is reused as before.
    let out = demo(&["--dir", "real", "--force"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!real.join("state/keep").exists());
    // A link left in the demo's own directory is replaced, never written through.
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    for f in ["certkeeper.toml", "api-password", "root.pem"] {
        std::fs::remove_file(dir.join("demo").join(f)).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("demo").join(f)).unwrap();
    }
    let out = demo(&["--dir", "demo"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&victim).unwrap(),
        "precious\n",
        "written through a link"
    );
    // `demo --config FILE` was accepted and FILE ignored: it is refused, FILE untouched.
    for args in [
        &["--config", "real/certkeeper.toml", "demo", "--dir", "demo"][..],
        &["demo", "--dir", "demo", "--config", "x.toml"],
    ] {
        let out = tokio::process::Command::new(BIN)
            .args(args)
            .current_dir(&dir)
            .env_remove("CERTKEEPER_CONFIG")
            .output()
            .await
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("--config has no effect"), "{}", stderr(&out));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewing_a_name_that_is_not_configured_is_refused_before_anything_happens() {
    let env = TestEnv::start("unknown-name").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let out = env.run(&["--renew-now", "www.exmaple.com"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("www.exmaple.com is not a configured certificate"),
        "{}",
        stderr(&out)
    );
    assert!(!env.dir.join("state").exists() && env.sim.control().requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_filter_selects_levels_per_target_and_a_bad_one_is_reported() {
    let env = TestEnv::start("log-filter").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    // Debug for certkeeper's own modules only: its lines appear, hickory's stay out.
    let out = env
        .run(&["run", "--once"], &[("CERTKEEPER_LOG", "warn,certkeeper=debug")])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("DEBUG") && stderr(&out).contains("certkeeper::"),
        "{}",
        stderr(&out)
    );
    let foreign = stderr(&out)
        .lines()
        .filter(|l| l.contains(" DEBUG ") && !l.contains(" DEBUG certkeeper"))
        .count();
    assert_eq!(foreign, 0, "{}", stderr(&out));
    // A filter that does not parse is named, and the default is used.
    let out = env
        .run(&["status"], &[("CERTKEEPER_LOG", "info,certkeeper=loud")])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("CERTKEEPER_LOG=\"info,certkeeper=loud\" is not a log filter"),
        "{}",
        stderr(&out)
    );
}

/// `--renew-now` was accepted both before and after `run`, one silently winning over the other,
/// and beside `--once` or `status` where it meant nothing. It is one flag now, and a combination
/// that means nothing is refused before anything happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_now_is_one_flag_and_meaningless_combinations_are_refused() {
    let env = TestEnv::start("renew-now-flag").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    for args in [
        &["run", "--once", "--renew-now", "www.example.com"][..],
        &["status", "--renew-now"],
        &["check", "--renew-now", "www.example.com"],
    ] {
        let out = env.run(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--renew-now cannot be combined"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert!(!env.dir.join("state").exists(), "a refused command wrote state");
    assert_eq!(env.paid("www.example.com"), 0);
    // Names compare without case, as `check` compares them.
    env.run_ok(&["--renew-now", "WWW.Example.COM"]).await;
    env.assert_installed("www.example.com");
}

/// `certkeeper status | head` panicked (broken pipe, exit 101). A reader that goes away now ends
/// the output quietly, with success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_into_a_reader_that_goes_away_ends_quietly() {
    let env = TestEnv::start("status-pipe").await;
    // Enough rows to fill the pipe, so that writing goes on after `head` has left.
    let names: Vec<String> = (0..3000).map(|i| format!("c{i}.example.com")).collect();
    let certs: Vec<Cert<'_>> = names.iter().map(|n| Cert::autodns(n)).collect();
    env.write_config(&certs, "");
    let out = tokio::process::Command::new("bash")
        .args([
            "-c",
            "\"$0\" status | head -n 1 >/dev/null; echo \"exit=${PIPESTATUS[0]}\"",
            BIN,
        ])
        .env("CERTKEEPER_CONFIG", env.config_path())
        .current_dir(&env.dir)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("exit=0"), "{said}\n{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// Logs showed `not_after=2027-06-18 8:01:35.0 +00:00:00`, `j=Some((Create, Keyed))` and
/// `after 19.890832952s`; configuration errors stayed plain text under `--log-format json`; and
/// every line a good reload hook wrote on stderr was a WARN. Under `--log-format json` every
/// line is JSON, no field holds Rust Debug text, times are RFC 3339, and a hook that succeeds
/// logs its output at INFO; one that fails is named at ERROR with what it said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_plain_fields_and_a_good_hooks_output_at_info() {
    let env = TestEnv::start("log-format").await;
    let flag = env.dir.join("broken");
    let reload = env.script(
        "reload.sh",
        &format!(
            "if [ -e {} ]; then echo 'nginx: [emerg] bad config' >&2; exit 1; fi\necho 'nginx: configuration reloaded' >&2",
            flag.display()
        ),
    );
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("reload = [\"{}\"]", reload.display()),
    );
    let lines = |out: &std::process::Output| -> Vec<serde_json::Value> {
        stderr(out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
            .collect()
    };
    let debug_text = [
        "Some(",
        "None",
        "+00:00:00",
        "((",
        "Create",
        "Keyed",
        "Sending",
        "Reissue",
    ];
    let check_fields = |lines: &[serde_json::Value]| {
        // certkeeper's own lines (a library's debug lines are its own business).
        for line in lines
            .iter()
            .filter(|l| l["target"].as_str().is_some_and(|t| t.starts_with("certkeeper")))
        {
            for (key, value) in line["fields"].as_object().unwrap() {
                let Some(v) = value.as_str() else { continue };
                for d in debug_text {
                    assert!(
                        !v.contains(d) || key == "message" && !d.contains('('),
                        "{key}={v:?} holds {d:?}: {line}"
                    );
                }
                // A duration in plain units: no nanosecond digits.
                let digits_after_point = v
                    .split('.')
                    .nth(1)
                    .map(|t| t.chars().take_while(char::is_ascii_digit).count());
                assert!(
                    digits_after_point.is_none_or(|n| n <= 3) || v.contains(':'),
                    "{key}={v:?}: {line}"
                );
                if ["not_after", "term_end", "at", "until"].contains(&key.as_str()) {
                    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                        .unwrap_or_else(|e| panic!("{key}={v:?} is not RFC 3339 ({e}): {line}"));
                }
            }
        }
    };
    let out = env
        .run(
            &["--log-format", "json", "run", "--once"],
            &[("CERTKEEPER_LOG", "debug")],
        )
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = lines(&out);
    check_fields(&first);
    let hook_line = first
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("configuration reloaded"))
        })
        .unwrap_or_else(|| panic!("the hook's output is not logged: {first:?}"));
    assert_eq!(hook_line["level"], "INFO", "{hook_line}");
    assert!(
        first.iter().all(|l| l["level"] != "WARN" && l["level"] != "ERROR"),
        "{first:?}"
    );

    std::fs::write(&flag, "").unwrap();
    let out = env.run(&["--log-format", "json", "--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let failed = lines(&out);
    check_fields(&failed);
    assert!(
        failed
            .iter()
            .any(|l| l["level"] == "ERROR" && l.to_string().contains("[emerg] bad config")),
        "{failed:?}"
    );
}
