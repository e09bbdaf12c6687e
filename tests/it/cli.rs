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

/// Each case: text to replace, its replacement, the field the error must name, and a piece of
/// text on the line the error must point at.
const BAD: &[(&str, &str, &str, &str)] = &[
    ("user = \"demo\"", "user = \"\"", "api.user", "user ="),
    ("context = 4", "context = 0", "api.context", "context ="),
    ("context = 4", "context = \"4\"", "context", "context ="),
    (
        "timeout = \"3s\"",
        "timeout = \"3 parsecs\"",
        "api.timeout",
        "timeout =",
    ),
    (
        "ca_file = \"root.pem\"",
        "ca_file = \"missing.pem\"",
        "api.ca_file",
        "ca_file =",
    ),
    (
        "password_file = \"api-password\"",
        "password_file = \"nope\"",
        "api.password_file",
        "password_file =",
    ),
    ("[api]", "[api]\nproxy = \"http://proxy\"", "proxy", "proxy ="),
    (
        "live_dir = \"live\"",
        "live_dir = \"state\"",
        "store.live_dir",
        "live_dir =",
    ),
    (
        "[store]",
        "[store]\nkeep_generations = 1",
        "store.keep_generations",
        "keep_generations",
    ),
    (
        "check_interval = \"100ms\"",
        "check_interval = \"0s\"",
        "dns.check_interval",
        "check_interval",
    ),
    (
        "[dns]",
        "[dns]\nnameservers = [\"ns1.example.com\"]",
        "dns.nameservers",
        "nameservers =",
    ),
    (
        "job_timeout = \"60s\"",
        "job_timeout = \"never\"",
        "order.job_timeout",
        "job_timeout",
    ),
    (
        "[order]",
        "[order]\nconcurrency = 1000",
        "order.concurrency",
        "concurrency",
    ),
    (
        "[defaults]",
        "[defaults]\nproduct = \"FREESSL\"",
        "defaults.product",
        "product =",
    ),
    (
        "[defaults]",
        "[defaults]\nlifetime_months = 7",
        "defaults.lifetime_months",
        "lifetime_months",
    ),
    (
        "[defaults]",
        "[defaults]\nsoftware = \"NGINX\"",
        "defaults.software",
        "software =",
    ),
    (
        "key = \"ecdsa-p256\"",
        "key = \"dsa-1024\"",
        "certificate[0].key",
        "key =",
    ),
    (
        "name = \"www.example.com\"",
        "name = \"www..example.com\"",
        "certificate[0].name",
        "www..example.com",
    ),
    (
        "alt_names = []",
        "alt_names = [\"10.0.0.1\"]",
        "certificate[0].alt_names",
        "alt_names",
    ),
    (
        "[defaults]",
        "[defaults]\ndns = \"manual\"",
        "defaults.dns",
        "dns = \"manual\"",
    ),
    (
        "[defaults]",
        "[defaults]\ndns = \"hook\"",
        "certificate[0].dns_hook",
        "[[certificate]]",
    ),
    (
        "[defaults]",
        "[defaults]\nreload = [\"\"]",
        "defaults.reload",
        "reload =",
    ),
    (
        "[defaults]",
        "[defaults]\nrenew_before = \"150%\"",
        "defaults.renew_before",
        "renew_before",
    ),
    (
        "[defaults]",
        "[defaults]\nmax_paid_orders = 0",
        "defaults.max_paid_orders",
        "max_paid_orders",
    ),
    (
        "[defaults]",
        "[defaults]\nhook_timeout = \"forever\"",
        "defaults.hook_timeout",
        "hook_timeout",
    ),
    (
        "[defaults]",
        "[defaults]\nrenew_term = \"yes\"",
        "renew_term",
        "renew_term",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_config_is_refused_by_the_binary_with_file_line_and_field() {
    let env = TestEnv::start("badconfigs").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    assert!(BAD.len() >= 20);
    for (from, to, field, anchor) in BAD {
        assert!(good.contains(from), "{from} is not in the test config");
        let bad = good.replacen(from, to, 1);
        std::fs::write(env.config_path(), &bad).unwrap();
        let line = bad.lines().position(|l| l.contains(anchor)).unwrap() + 1;
        let out = env.run(&["check"], &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{field}: {err}");
        let expected = format!("{}:{line}: {field}: ", env.config_path().display());
        assert!(err.contains(&expected), "expected '{expected}' in:\n{err}");
    }
    // A world-readable password file is refused too, and nothing at all was written.
    std::fs::write(env.config_path(), &good).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.join("api-password"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("chmod 600"), "{}", stderr(&out));
    assert!(!env.dir.join("state").exists() && !env.dir.join("live").exists());
    assert!(env.sim.control().requests().is_empty(), "a bad config reached the API");
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

/// `check` passed hook programs that do not exist, said nothing of a `dns_hook` that is never
/// run, took more names than the product covers, and stopped at the first wrong type. Now
/// every one is reported, in the order of the file; the hook's program only by `check` (which
/// runs where the hooks will), a warning when a run loads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_missing_hook_programs_unused_settings_product_limits_and_every_type_error() {
    let env = TestEnv::start("check-more").await;
    let not_executable = env.dir.join("reload.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    env.write_config(
        &[Cert {
            alt: &[
                "a.example.com",
                "b.example.com",
                "c.example.com",
                "d.example.com",
                "e.example.com",
            ],
            ..Cert::autodns("www.example.com")
        }],
        "product = \"QUICKSSLPREMIUM\"",
    );
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    let line_of = |text: &str, anchor: &str| text.lines().position(|l| l.contains(anchor)).unwrap() + 1;
    let out = env.run(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let at = format!(
        "{}:{}: certificate[0].alt_names: ",
        env.config_path().display(),
        line_of(&good, "alt_names")
    );
    assert!(
        stderr(&out).contains(&at) && stderr(&out).contains("QUICKSSLPREMIUM takes at most 5"),
        "{}",
        stderr(&out)
    );

    // Missing and non-executable programs, and a dns_hook beside dns = "autodns".
    let text = good
        .replace("\"d.example.com\", \"e.example.com\"", "\"d.example.com\"")
        .replace(
            "key = \"ecdsa-p256\"\n",
            &format!(
                "key = \"ecdsa-p256\"\nreload = [\"{}\"]\ndns_hook = [\"/bin/true\"]\n",
                not_executable.display()
            ),
        )
        .replace(
            "[defaults]\n",
            "[daemon]\non_failure = [\"/nonexistent/notify-admins\"]\n\n[defaults]\n",
        );
    std::fs::write(env.config_path(), &text).unwrap();
    let out = env.run(&["check"], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let path = env.config_path().display().to_string();
    let expected = [
        format!(
            "{path}:{}: daemon.on_failure: /nonexistent/notify-admins cannot be run",
            line_of(&text, "on_failure")
        ),
        format!(
            "{path}:{}: certificate[0].reload: {} cannot be run: it is not executable",
            line_of(&text, "reload ="),
            not_executable.display()
        ),
        format!(
            "warning: {path}:{}: certificate[0].dns_hook: is never run",
            line_of(&text, "dns_hook")
        ),
    ];
    let mut last = 0;
    for e in &expected {
        let at = err
            .find(e.as_str())
            .unwrap_or_else(|| panic!("expected '{e}' in:\n{err}"));
        assert!(at >= last, "not in the order of the file:\n{err}");
        last = at;
    }
    // A run loads the same file: the programs are warnings there, and nothing fails to start.
    let out = env.run(&["status"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("notify-admins cannot be run"), "{}", stderr(&out));

    // Once the programs are there, check passes and still tells of the unused dns_hook.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o755)).unwrap();
    let text = text.replace("/nonexistent/notify-admins", &not_executable.display().to_string());
    std::fs::write(env.config_path(), &text).unwrap();
    let out = env.run(&["check"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid (1 certificate(s), 1 warning(s))"));
    assert!(stderr(&out).contains("dns_hook: is never run"), "{}", stderr(&out));

    // Three wrong types at once, each reported in one run, as JSON lines under --log-format json.
    let text = text
        .replace("context = 4", "context = \"four\"")
        .replace("timeout = \"3s\"", "timeout = 3")
        .replace("key = \"ecdsa-p256\"", "key = 256");
    std::fs::write(env.config_path(), &text).unwrap();
    let out = env.run(&["--log-format", "json", "check"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let fields: Vec<&str> = lines.iter().filter_map(|l| l["fields"]["field"].as_str()).collect();
    assert_eq!(fields, ["context", "timeout", "key"], "{lines:?}");
    assert_eq!(lines[0]["fields"]["line"], line_of(&text, "context ="), "{lines:?}");
    assert!(env.sim.control().requests().is_empty());
}

/// There was no way to test the credentials without ordering. `check --online` asks the API
/// with calls that cost nothing, names what failed, and buys nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_online_tests_url_credentials_and_contacts_without_spending() {
    let env = TestEnv::start("check-online").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let out = env.run_ok(&["check", "--online"]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("reached (GET /hello)"), "{said}");
    assert!(said.contains("api.user demo in context 4: accepted"), "{said}");
    assert!(said.contains("configuration is valid"), "{said}");

    // A wrong password is named with the user and context it was tried for.
    let password = env.dir.join("api-password");
    let right = std::fs::read_to_string(&password).unwrap();
    std::fs::write(&password, "wrong\n").unwrap();
    let out = env.run(&["check", "--online"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api.user demo in context 4: the API refused")
            && stderr(&out).contains("check api.user, api.context and the password"),
        "{}",
        stderr(&out)
    );
    std::fs::write(&password, right).unwrap();

    // A contact id the account does not have is named by its field; one it has passes.
    env.run_ok(&["run", "--once"]).await;
    let contacts: std::collections::BTreeMap<String, i64> =
        serde_json::from_slice(&std::fs::read(env.dir.join("state/contacts.json")).unwrap()).unwrap();
    let id = *contacts.values().next().expect("the run created a contact");
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let with_ids = config
        .lines()
        .map(|l| {
            if l.starts_with("admin_contact") {
                "admin_contact = 987654321".to_string()
            } else if l.starts_with("technical_contact") {
                format!("technical_contact = {id}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(env.config_path(), &with_ids).unwrap();
    let out = env.run(&["check", "--online"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("certificate[0].admin_contact (www.example.com): contact 987654321:"),
        "{}",
        stderr(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!(
            "certificate[0].technical_contact (www.example.com): contact {id}: exists"
        )),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // An API that cannot be reached is named, and check does not hang on it.
    let dead = with_ids.replace(&env.sim.api_url, "http://127.0.0.1:9/v1");
    std::fs::write(env.config_path(), dead).unwrap();
    let started = std::time::Instant::now();
    let out = env.run(&["check", "--online"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("api.url http://127.0.0.1:9/v1: cannot connect"),
        "{}",
        stderr(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());

    // Only the one order of `run --once` was bought; check asked with reads alone.
    assert_eq!(env.sim.control().ledger().len(), 1, "{:?}", env.sim.control().ledger());
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
