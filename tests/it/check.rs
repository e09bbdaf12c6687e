//! `certkeeper check`: every error with file, line and field, hook programs, product limits,
//! warnings, and `check --online`.

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
    ("[api]", "[api]\nroots = \"mozilla\"", "api.roots", "roots ="),
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
