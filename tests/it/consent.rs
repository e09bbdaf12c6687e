//! Paid steps the configuration does not allow: never sent, nothing prepared for them, shown in
//! `status` with the setting that allows them, told to `on_failure` once, and done at the next
//! run once the operator changes that setting.

use std::time::Duration;

use crate::support::*;

/// The requests the simulator saw from `from` on, as "METHOD PATH".
fn requests_since(env: &TestEnv, from: usize) -> Vec<String> {
    env.sim.control().requests()[from..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

/// The `on_failure` events recorded so far.
fn events(alarms: &std::path::Path) -> Vec<String> {
    calls(alarms)
        .iter()
        .filter_map(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("CERTKEEPER_EVENT="))
                .map(str::to_string)
        })
        .collect()
}

/// `new_orders = "deny"` and no order in the account: the run buys nothing and prepares nothing
/// (only the account's search), exits 8, and `status` names what waits and the setting that
/// allows it; `on_failure` hears `consent_needed` once, not at every run. Allowed, the next run
/// orders at once, whatever backoff the waits had built up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_order_the_config_denies_waits_is_told_once_and_is_bought_once_allowed() {
    let env = TestEnv::start("consent-deny").await;
    let name = "www.example.com";
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], "new_orders = \"deny\"");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));

    // The second time as an operator would ask, at once (a plain run would wait out the
    // backoff of the first wait).
    for args in [&["run", "--once"][..], &["--renew-now", name]] {
        let run = args[0];
        let before = env.sim.control().requests().len();
        let out = env.run(args, &[]).await;
        assert_eq!(out.status.code(), Some(8), "run {run}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("new_orders = \"deny\" forbids buying one"),
            "{}",
            stderr(&out)
        );
        let asked = requests_since(&env, before);
        assert!(
            asked.iter().all(|r| r.ends_with("/certificate/_search")),
            "run {run} asked more than the account's search: {asked:?}"
        );
    }
    assert!(
        env.sim.control().ledger().is_empty(),
        "{:?}",
        env.sim.control().ledger()
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "waiting_for_consent", "{rows}");
    assert_eq!(
        rows[0]["state_text"], "waiting for consent: a new 12-month order of QUICKSSLPREMIUM",
        "{rows}"
    );
    assert!(
        rows[0]["next"].as_str().unwrap().contains("set new_orders = \"allow\""),
        "{rows}"
    );
    let table = String::from_utf8_lossy(&env.run_ok(&["status"]).await.stdout).into_owned();
    assert!(table.contains("waiting for consent"), "{table}");
    assert_eq!(events(&alarms), ["consent_needed"], "told once: {:?}", calls(&alarms));
    assert!(calls(&alarms)[0].contains("new_orders"), "{:?}", calls(&alarms));

    // Allowed: the next plain run buys it, though the last wait was a moment ago.
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        config.replace("new_orders = \"deny\"", "new_orders = \"allow\""),
    )
    .unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed(name);
    assert_eq!(env.paid(name), 1);
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "deployed", "{rows}");
    assert_eq!(events(&alarms), ["consent_needed"]);
}

/// The spend guard refused a create only when it was about to be sent: a key made, the order
/// prepared, the DNS hook's record published and removed again, at every run. A paid step over
/// `max_paid_orders` is now refused before anything is done for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paid_order_over_the_spend_guard_prepares_nothing_and_waits() {
    let env = TestEnv::start("consent-guard").await;
    let name = "guard.example.com";
    let (hook, hook_calls) = env.recorder("dns-hook");
    env.write_config(&[Cert::hook(name)], "");
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let config = config.replace(
        &format!("dns_hook = [\"{BIN}\""),
        &format!("dns_hook = [\"{}\", \"{BIN}\"", hook.display()),
    );
    std::fs::write(env.config_path(), config).unwrap();
    // A create already paid in this term and no certificate id to reissue: the next order is
    // another create, which max_paid_orders = 1 refuses.
    env.save_paid_create(name, None);
    // `plan` does not count it as a purchase either.
    let out = env.run(&["plan", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["certificates"][0]["action"], "refused", "{plan}");
    assert_eq!(plan["certificates"][0]["paid"], false, "{plan}");
    let before = env.sim.control().requests().len();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("raise max_paid_orders (now 1)"),
        "{}",
        stderr(&out)
    );
    let asked = requests_since(&env, before);
    assert!(
        asked.iter().all(|r| r.ends_with("/certificate/_search")),
        "more than the account's search: {asked:?}"
    );
    assert!(
        calls(&hook_calls).is_empty(),
        "the DNS hook ran: {:?}",
        calls(&hook_calls)
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "waiting_for_consent", "{rows}");
    assert_eq!(
        rows[0]["state_text"], "waiting for consent: another paid create request",
        "{rows}"
    );
    assert_eq!(env.paid(name), 0);
}

/// The order term ended and `renew_term` is off: the next term is not bought, the run exits 8,
/// `status` says the term ended and how to buy the next, and `on_failure` hears it once. With
/// `renew_term = true` the next run renews it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_term_without_renew_term_waits_and_is_renewed_once_allowed() {
    // A month is a second: the 12-month term ends 12 s after the order.
    let env = TestEnv::start_months("consent-term", Duration::from_secs(1)).await;
    let name = "term.example.com";
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], "");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    let term_end = time::OffsetDateTime::parse(
        rows[0]["term_end"].as_str().expect("the term's end is known"),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let left = term_end - time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::try_from(left).unwrap_or_default() + Duration::from_secs(1)).await;

    for run in 0..2 {
        let out = env.run(&["run", "--once"], &[]).await;
        assert_eq!(out.status.code(), Some(8), "run {run}: {}", stderr(&out));
        assert!(stderr(&out).contains("set renew_term = true"), "{}", stderr(&out));
    }
    assert_eq!(env.sim.control().ledger().len(), 1, "{:?}", env.sim.control().ledger());
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "term_ended", "{rows}");
    assert_eq!(
        rows[0]["state_text"], "term ended: the next 12-month term of QUICKSSLPREMIUM waits for consent",
        "{rows}"
    );
    assert!(
        rows[0]["next"].as_str().unwrap().contains("renew_term = true"),
        "{rows}"
    );
    assert_eq!(events(&alarms), ["consent_needed"], "{:?}", calls(&alarms));
    assert!(
        calls(&alarms)[0].contains("the next 12-month term"),
        "{:?}",
        calls(&alarms)
    );

    let plan = |out: &std::process::Output| -> (String, bool) {
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let step = &plan["certificates"][0];
        (step["action"].as_str().unwrap().into(), step["paid"].as_bool().unwrap())
    };
    let out = env.run(&["plan", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(plan(&out), ("term_ended".into(), false));

    env.write_config(&[Cert::autodns(name)], "renew_term = true");
    // `plan` says the renewal costs money, and exits 7 for it.
    let out = env.run(&["plan", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(plan(&out), ("renew".into(), true));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ledger = env.sim.control().ledger();
    assert_eq!(
        ledger.iter().map(|l| l.kind.as_str()).collect::<Vec<_>>(),
        ["create", "renew"],
        "{ledger:?}"
    );
    env.assert_installed(name);
}

/// The daemon, with the backoff it ships with: a denied new order waits and is told once; the
/// edit that allows it is acted on as soon as the daemon has re-read the file, not after the
/// wait's backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_tells_a_wait_once_and_acts_on_the_edit_that_allows_it() {
    let env = TestEnv::start("consent-daemon").await;
    let name = "www.example.com";
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], "new_orders = \"deny\"");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 30, || !calls(&alarms).is_empty()).await;
    // The daemon wakes at least every minute; the wait is not asked or told again meanwhile.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "waiting_for_consent", "{rows}");
    assert_eq!(events(&alarms), ["consent_needed"], "{}", daemon.log());
    assert!(env.sim.control().ledger().is_empty());

    let config = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        config.replace("new_orders = \"deny\"", "new_orders = \"allow\""),
    )
    .unwrap();
    wait_until(&daemon, 30, || env.live(name).join("cert.pem").exists()).await;
    let log = daemon.stop();
    assert_eq!(env.paid(name), 1, "{log}");
    assert_eq!(events(&alarms), ["consent_needed"], "{log}");
}
