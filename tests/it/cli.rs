use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_config_names_file_line_and_field_exits_2_and_writes_nothing() {
    let env = TestEnv::start("badconfig").await;
    env.write_config(&[Cert::autodns("www.example.com")], "renew_before = \"soon\"");
    for args in [&["check"][..], &["run", "--once"], &["--renew-now"], &["status"]] {
        let out = env.run(args, &[]).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{}:", env.config_path().display()))
                && err.contains("defaults.renew_before")
                && err.contains("neither a share"),
            "{err}"
        );
        assert!(
            !env.dir.join("state").exists() && !env.dir.join("live").exists(),
            "{args:?} wrote files"
        );
    }
    assert!(env.sim.control().requests().is_empty());
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let out = env.run_ok(&["check"]).await;
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid (1 certificate(s))"));
}

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
    std::fs::remove_dir_all(&dir).unwrap();
}
