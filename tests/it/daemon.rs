use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use autodns_sim::{Durations, Faults, SimConfig};

use crate::support::*;

/// The installed certificate's expiry, if one is installed.
fn not_after(env: &TestEnv, name: &str) -> Option<i64> {
    let pem = std::fs::read_to_string(env.live(name).join("cert.pem")).ok()?;
    Some(certkeeper::x509::info(&pem).unwrap().not_after.unix_timestamp())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn count(env: &TestEnv, name: &str, kind: &str) -> usize {
    env.sim
        .control()
        .ledger()
        .iter()
        .filter(|l| l.name == name && l.kind == kind)
        .count()
}

const FAST: &str = "[daemon]\nretry_backoff = [\"1s\", \"2s\", \"4s\"]\n";

/// A simulator on a compressed clock that shows each order's term end (`payable`, as the 2022
/// sample does; older answers leave it out, and then no term renewal can be planned).
fn compressed(faults: Faults, month: u64, validity: u64) -> SimConfig {
    let faults = Faults {
        payable: true,
        ..faults
    };
    SimConfig {
        durations: Durations {
            month: Duration::from_secs(month),
            cert_validity: Duration::from_secs(validity),
            hang: Duration::from_secs(4),
            ..Durations::default()
        },
        faults,
        ..SimConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_compressed_clock_every_certificate_stays_valid_and_terms_are_renewed_where_allowed() {
    // A month is 10 s and a certificate lives 30 s: a 12-month term ends after 120 s.
    let env = TestEnv::start_sim("daemon-clock", compressed(Faults::default(), 10, 30)).await;
    env.write_config(
        &[
            Cert::autodns("a.example.com"),
            Cert::hook("b.example.net"),
            Cert::autodns("c.example.org"),
        ],
        "renew_term = true",
    );
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    let text = text.replace(
        "name = \"c.example.org\"\n",
        "name = \"c.example.org\"\nrenew_term = false\n",
    );
    std::fs::write(env.config_path(), format!("{text}\n{FAST}")).unwrap();
    let daemon = Daemon::start(&env);
    let started = unix_now();
    let mut first_seen: BTreeMap<&str, i64> = BTreeMap::new();
    let mut samples = 0;
    while unix_now() - started < 185 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = unix_now();
        for name in ["a.example.com", "b.example.net", "c.example.org"] {
            let Some(na) = not_after(&env, name) else {
                assert!(t - started < 20, "{name} was not issued within 20 s:\n{}", daemon.log());
                continue;
            };
            first_seen.entry(name).or_insert(t);
            // c's term ends after 120 s and may not be renewed: it is allowed to lapse then.
            if name != "c.example.org" || t - started < 110 {
                assert!(
                    na > t,
                    "{name} expired at {na} (now {t}), {} s into the run:\n{}",
                    t - started,
                    daemon.log()
                );
            }
        }
        samples += 1;
    }
    let log = daemon.stop();
    assert!(samples >= 180, "{samples} samples");
    for name in ["a.example.com", "b.example.net"] {
        assert_eq!(count(&env, name, "create"), 1, "{:?}", env.sim.control().ledger());
        assert_eq!(
            count(&env, name, "renew"),
            1,
            "{name}: the term must be renewed once: {:?}",
            env.sim.control().ledger()
        );
        assert!(
            count(&env, name, "reissue") >= 5,
            "{name} was reissued only {} times",
            count(&env, name, "reissue")
        );
    }
    assert_eq!(count(&env, "c.example.org", "create"), 1);
    assert_eq!(count(&env, "c.example.org", "renew"), 0, "c has renew_term = false");
    assert!(
        log.contains("the order term ends soon and renew_term is off"),
        "no term warning for c:\n{log}"
    );
    assert_eq!(
        env.sim.control().ledger().iter().filter(|l| l.charged).count(),
        5,
        "exactly 3 creates and 2 renewals are paid"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_follows_config_edits_without_a_restart() {
    let env = TestEnv::start_sim("daemon-live", compressed(Faults::default(), 60, 30)).await;
    env.write_config(&[Cert::autodns("a.example.com")], "");
    let append_fast = |env: &TestEnv| {
        env.append_config(FAST);
    };
    append_fast(&env);
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 20, || not_after(&env, "a.example.com").is_some()).await;

    // A certificate added to the config is issued without a restart.
    env.write_config(&[Cert::autodns("a.example.com"), Cert::autodns("b.example.com")], "");
    append_fast(&env);
    wait_until(&daemon, 20, || not_after(&env, "b.example.com").is_some()).await;

    // An invalid edit is logged and changes nothing.
    let good = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        good.replace("key = \"ecdsa-p256\"", "key = \"dsa-512\""),
    )
    .unwrap();
    wait_until(&daemon, 10, || {
        daemon.log().contains("the new configuration is invalid")
    })
    .await;
    assert!(daemon.log().contains("unknown key type 'dsa-512'"), "{}", daemon.log());

    // A removed certificate is no longer renewed; its files stay. (An order of b already under
    // way when the edit lands may finish; none starts after it.)
    let reloads = daemon.log().matches("configuration reloaded").count();
    env.write_config(&[Cert::autodns("a.example.com")], "");
    append_fast(&env);
    wait_until(&daemon, 10, || {
        let log = daemon.log();
        log.matches("configuration reloaded").count() > reloads && log.contains("removed=b.example.com")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let b_before = count(&env, "b.example.com", "reissue");
    let a_before = count(&env, "a.example.com", "reissue");
    tokio::time::sleep(Duration::from_secs(35)).await;
    let b_after = count(&env, "b.example.com", "reissue");
    assert_eq!(b_after, b_before, "b was renewed after its removal:\n{}", daemon.log());
    assert!(
        count(&env, "a.example.com", "reissue") > a_before,
        "a stopped being renewed:\n{}",
        daemon.log()
    );
    assert!(env.live("b.example.com").join("cert.pem").exists());

    // SIGHUP re-reads the configuration too.
    Command::new("kill")
        .args(["-HUP", &daemon.child.id().to_string()])
        .status()
        .unwrap();
    wait_until(&daemon, 10, || {
        daemon.log().contains("SIGHUP: re-reading the configuration")
    })
    .await;

    // A second daemon on the same state directory refuses, naming the first.
    let second = env.run(&["run"], &[]).await;
    assert_eq!(second.status.code(), Some(5), "{}", stderr(&second));
    assert!(
        stderr(&second).contains(&format!("another certkeeper (PID {})", daemon.child.id())),
        "{}",
        stderr(&second)
    );
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fifth_of_the_api_calls_failing_every_certificate_stays_valid_and_none_is_paid_twice() {
    // Every fault kind, ghost commits included, on 20% of all calls.
    let faults = Faults {
        rate: 0.2,
        ..Faults::default()
    };
    let env = TestEnv::start_sim("daemon-faults", compressed(faults, 30, 60)).await;
    let names = ["f1.example.com", "f2.example.net", "f3.example.org"];
    env.write_config(
        &[Cert::autodns(names[0]), Cert::hook(names[1]), Cert::autodns(names[2])],
        "",
    );
    env.append_config(FAST);
    let daemon = Daemon::start(&env);
    let started = unix_now();
    while unix_now() - started < 150 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let t = unix_now();
        for name in names {
            match not_after(&env, name) {
                Some(na) => assert!(
                    na > t,
                    "{name} expired {} s into the run:\n{}",
                    t - started,
                    daemon.log()
                ),
                None => assert!(t - started < 60, "{name} was not issued within 60 s:\n{}", daemon.log()),
            }
        }
    }
    daemon.stop();
    for name in names {
        env.assert_installed(name);
        assert_eq!(
            count(&env, name, "create"),
            1,
            "{name}: {:?}",
            env.sim.control().ledger()
        );
        assert_eq!(count(&env, name, "renew"), 0);
        assert!(
            count(&env, name, "reissue") >= 2,
            "{name} was reissued {} times",
            count(&env, name, "reissue")
        );
    }
    let kinds: std::collections::BTreeSet<String> = env
        .sim
        .control()
        .requests()
        .iter()
        .filter_map(|r| r.fault.clone())
        .collect();
    assert!(
        kinds.contains("ghost") && kinds.len() >= 8,
        "faults injected: {kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_call_the_on_failure_hook_and_metrics_show_every_certificate() {
    let faults = Faults {
        job_outcome: autodns_sim::JobOutcome::Fail,
        ..Faults::default()
    };
    let env = TestEnv::start_sim("daemon-metrics", compressed(faults, 60, 60)).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (hook, seen) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns("m.example.com")], "");
    env.append_config(&format!(
        "[daemon]\nretry_backoff = [\"1s\"]\nmetrics_listen = \"127.0.0.1:{port}\"\non_failure = [\"{}\"]\n",
        hook.display()
    ));
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 20, || {
        std::fs::read_to_string(&seen).is_ok_and(|s| s.contains("---"))
    })
    .await;
    let report = std::fs::read_to_string(&seen).unwrap();
    assert!(
        report.contains("CERTKEEPER_NAME=m.example.com") && report.contains("CERTKEEPER_EVENT=failed"),
        "{report}"
    );
    assert!(
        report.contains("CERTKEEPER_ERROR=") && report.contains("ended FAILED"),
        "{report}"
    );

    // Once the CA behaves again the certificate is issued, and the metrics say so.
    env.sim.control().set_faults(Faults::default()).unwrap();
    wait_until(&daemon, 30, || not_after(&env, "m.example.com").is_some()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = metrics(port).await;
    let na = not_after(&env, "m.example.com").unwrap();
    for expected in [
        format!("certkeeper_certificate_expiration_timestamp_seconds{{name=\"m.example.com\"}} {na}"),
        "certkeeper_certificate_ready_status{name=\"m.example.com\"} 1".to_string(),
        "certkeeper_certificate_failures{name=\"m.example.com\"} 0".to_string(),
        "# TYPE certkeeper_certificate_renewal_timestamp_seconds gauge".to_string(),
        "# TYPE certkeeper_certificate_term_end_timestamp_seconds gauge".to_string(),
        "certkeeper_certificate_last_success_timestamp_seconds{name=\"m.example.com\"}".to_string(),
    ] {
        assert!(metrics.contains(&expected), "'{expected}' missing from:\n{metrics}");
    }
    let last_check: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("certkeeper_last_check_timestamp_seconds "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(unix_now() - last_check < 5, "the last check is stale: {last_check}");
    let renewal: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("certkeeper_certificate_renewal_timestamp_seconds{name=\"m.example.com\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        renewal > unix_now() && renewal < na,
        "renewal at {renewal}, expiry {na}"
    );
    daemon.stop();
}

/// nginx down as a renewal lands: the reload hook fails on every try. The daemon used to rerun
/// it, and `on_failure`, about 290 times a second, flipping `live/NAME` back and forth. With the
/// backoff it ships with (the config sets none), it waits a minute, tries once (switch, hook,
/// switch back, hook), then waits ten, and tells `on_failure` once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_hook_that_always_fails_is_retried_after_the_shipped_backoff_not_in_a_loop() {
    let env = TestEnv::start("daemon-reload-fails").await;
    let name = "www.example.com";
    let down = env.dir.join("nginx-down");
    let runs = env.dir.join("reload.runs");
    let reload = env.script(
        "reload.sh",
        &format!(
            "readlink {} >> {}\n[ ! -e {} ] || {{ echo 'nginx: [emerg] cannot load certificate' >&2; exit 1; }}",
            env.live(name).display(),
            runs.display(),
            down.display()
        ),
    );
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], &format!("reload = [\"{}\"]", reload.display()));
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    env.run_ok(&["run", "--once"]).await;
    let s1 = env.serial(name);
    std::fs::write(&down, "").unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(env.serial(name), s1, "the live symlink was not rolled back");
    std::fs::remove_file(&runs).unwrap();
    // The one-shot run told on_failure of its own failed deploy; the daemon's count starts here.
    assert_eq!(calls(&alarms).len(), 1, "{:?}", calls(&alarms));
    std::fs::remove_file(&alarms).unwrap();

    let daemon = Daemon::start(&env);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let early = std::fs::read_to_string(&runs).unwrap_or_default();
    assert_eq!(
        early.lines().count(),
        0,
        "the hook ran again within 40 s of a failure:\n{early}\n{}",
        daemon.log()
    );
    tokio::time::sleep(Duration::from_secs(85) - started.elapsed()).await;
    let log = daemon.stop();
    let seen = std::fs::read_to_string(&runs).unwrap_or_default();
    let lines: Vec<&str> = seen.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "one retry after a minute (the new generation, then the rollback's rerun):\n{seen}\n{log}"
    );
    assert_ne!(lines[0], lines[1], "the retry did not roll back: {lines:?}");
    assert_eq!(env.serial(name), s1, "the old certificate must stay live");
    assert!(log.lines().count() < 100, "{} log lines:\n{log}", log.lines().count());
    let told = calls(&alarms);
    assert_eq!(told.len(), 1, "on_failure must be told once: {told:?}");
    let told = &told[0];
    assert!(told.contains("CERTKEEPER_EVENT=not_deployed"), "{told}");
    assert!(
        !told.contains("CERTKEEPER_FAILURES=0") && told.contains("CERTKEEPER_FAILURES="),
        "on_failure must get the failure count:\n{told}"
    );

    // Once nginx is back, the next run deploys the issued certificate, without a new order.
    std::fs::remove_file(&down).unwrap();
    env.run_ok(&["run", "--once"]).await;
    assert_ne!(env.serial(name), s1);
    env.assert_installed(name);
    assert_eq!(env.reissues(name), 1);
    assert_eq!(env.paid(name), 1);
}

/// A state file that cannot be read made 484 failures, and as many `on_failure` runs, in 10 s.
/// The daemon now remembers the failure itself and backs off as it ships (a minute first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_state_file_is_retried_after_the_backoff_not_in_a_loop() {
    let env = TestEnv::start("daemon-garbage-state").await;
    let name = "www.example.com";
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], "");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    std::fs::create_dir_all(env.dir.join("state/certs")).unwrap();
    std::fs::write(env.dir.join(format!("state/certs/{name}.json")), "\u{0}garbage{").unwrap();
    let daemon = Daemon::start(&env);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let log = daemon.stop();
    assert_eq!(log.matches("order failed").count(), 1, "{log}");
    let told = calls(&alarms);
    assert_eq!(told.len(), 1, "on_failure must be told once: {told:?}");
    let told = &told[0];
    assert!(
        told.contains(&format!("{name}.json")),
        "the error names the file:\n{told}"
    );
    assert_eq!(env.paid(name), 0);
}

/// Metrics were served one connection at a time: 30 idle connections delayed a scrape by a
/// minute. Each connection now has a task and a deadline of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_metrics_connections_do_not_hold_up_a_scrape() {
    let env = TestEnv::start("daemon-metrics-idle").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_config(&[Cert::autodns("m.example.com")], "");
    env.append_config(&format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 20, || not_after(&env, "m.example.com").is_some()).await;
    let mut idle = Vec::new();
    for _ in 0..30 {
        idle.push(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    }
    let started = Instant::now();
    let metrics = metrics(port).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the scrape took {:?} behind 30 idle connections",
        started.elapsed()
    );
    assert!(
        metrics.contains("certkeeper_certificate_ready_status{name=\"m.example.com\"} 1"),
        "{metrics}"
    );
    drop(idle);
    daemon.stop();
}

/// An order task that panicked left its certificate "in flight" in the daemon for good: never
/// retried, never reported. It is now a failure like any other: counted, told once, and retried
/// after the backoff the daemon ships with (a minute first), not at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_task_that_panics_is_counted_told_and_retried_after_the_shipped_backoff() {
    let env = TestEnv::start("daemon-panic").await;
    let name = "www.example.com";
    let (on_failure, alarms) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns(name)], "");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    let daemon = Daemon::start_with(&env, &[("CERTKEEPER_TEST_PAUSE_AT", "panic:keyed")]);
    let panics = |d: &Daemon| d.log().matches("stopped unexpectedly").count();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(panics(&daemon), 1, "retried before its backoff:\n{}", daemon.log());
    wait_until(&daemon, 50, || panics(&daemon) >= 2).await;
    let log = daemon.stop();
    assert!(log.contains("test panic at keyed"), "{log}");
    let told = calls(&alarms);
    assert_eq!(told.len(), 1, "the same failure is told once: {told:?}");
    assert!(
        told[0].contains("CERTKEEPER_EVENT=failed") && told[0].contains("CERTKEEPER_FAILURES=1"),
        "{told:?}"
    );
    assert_eq!(env.paid(name), 0);
}

/// At the end of an order term (renew_term off) the CA ends each new certificate with the term,
/// so the agent reissued again and again (17 times in the last term of a compressed run) for
/// nothing, and `status` then showed the expired certificate as "deployed". Now: once the
/// installed certificate lasts to the term's end, no reissue; after it, "term ended".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_reissue_that_gains_nothing_at_the_end_of_a_term() {
    // A month is 5 s: the 12-month term ends 60 s after the order; a certificate lives 45 s (and
    // is dated a minute back). Two reissues bring it to the term's end; more gain nothing.
    let env = TestEnv::start_sim("daemon-term-end", compressed(Faults::default(), 5, 45)).await;
    let name = "t.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.append_config(FAST);
    let daemon = Daemon::start(&env);
    tokio::time::sleep(Duration::from_secs(70)).await;
    let log = daemon.stop();
    assert_eq!(count(&env, name, "create"), 1, "{log}");
    assert!(
        count(&env, name, "reissue") <= 2,
        "{} reissues that could not outlive the installed certificate:\n{log}",
        count(&env, name, "reissue")
    );
    let status = env.run_ok(&["status", "--json"]).await;
    let rows = status_rows(&status);
    assert_eq!(rows[0]["state"], "term_ended", "{rows}");
    assert_eq!(env.paid(name), 1);
}

/// The metrics listener retried a failing accept at once, for ever: out of file descriptors, the
/// daemon spun at full CPU. Now it pauses between tries. The daemon is left no free descriptor
/// (`prlimit`) while connections wait to be accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_listener_out_of_file_descriptors_does_not_spin() {
    if !std::path::Path::new("/usr/bin/prlimit").exists() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "skipped: prlimit (util-linux) is not installed");
        assert!(
            std::env::var_os("CERTKEEPER_REQUIRE_SERVERS").is_none(),
            "prlimit is missing"
        );
        return;
    }
    let env = TestEnv::start("daemon-metrics-emfile").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_config(&[Cert::autodns("m.example.com")], "");
    env.append_config(&format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 20, || not_after(&env, "m.example.com").is_some()).await;
    let pid = daemon.child.id().to_string();
    // Leave the daemon no descriptor beyond those it holds: every accept fails, for as long as
    // the limit stands.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let limit = open.to_string();
    let set = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={limit}:{limit}")])
        .status()
        .unwrap();
    assert!(set.success());
    let mut idle = Vec::new();
    for _ in 0..20 {
        if let Ok(s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            idle.push(s);
        }
    }
    let cpu = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = cpu();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ticks = cpu() - before;
    // A spinning accept loop burns about 100 ticks a second; pausing, next to nothing.
    assert!(
        ticks < 60,
        "the daemon used {ticks} clock ticks in 3 s:\n{}",
        daemon.log()
    );
    assert!(
        daemon.log().contains("cannot accept a metrics connection"),
        "{}",
        daemon.log()
    );
    drop(idle);
    daemon.stop();
}

/// `--renew-now` was refused with exit 5 while the daemon ran, and nothing else could ask it.
/// It is now handed to the daemon through its control socket (owner-only, in the state
/// directory) and reports the daemon's result; the daemon, idle for longer than a minute, keeps
/// its last-check metric fresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_now_is_handed_to_the_running_daemon_and_its_last_check_stays_fresh() {
    let env = TestEnv::start("daemon-control").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    env.write_config(&[Cert::autodns("a.example.com"), Cert::autodns("b.example.com")], "");
    env.append_config(&format!("[daemon]\nmetrics_listen = \"127.0.0.1:{port}\"\n"));
    let daemon = Daemon::start(&env);
    let started = Instant::now();
    wait_until(&daemon, 30, || {
        not_after(&env, "a.example.com").is_some() && not_after(&env, "b.example.com").is_some()
    })
    .await;
    let socket = env.dir.join("state/control.sock");
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::symlink_metadata(&socket).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let serial = env.serial("a.example.com");
    let out = env.run(&["--renew-now", "A.example.com"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), daemon.log());
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(said.contains("a.example.com: deployed serial"), "{said}");
    assert_ne!(env.serial("a.example.com"), serial);
    assert_eq!(count(&env, "a.example.com", "reissue"), 1);
    assert_eq!(count(&env, "b.example.com", "reissue"), 0, "only the named one");
    assert!(
        daemon.log().contains("reissue asked for through the control socket"),
        "{}",
        daemon.log()
    );
    // A name the daemon does not have is refused as a one-shot run refuses it.
    let out = env.run(&["--renew-now", "c.example.com"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("c.example.com is not a configured certificate"),
        "{}",
        stderr(&out)
    );

    // Nothing is due for months; the daemon still looks, and says so, every minute.
    let left = Duration::from_secs(70).saturating_sub(started.elapsed());
    tokio::time::sleep(left).await;
    let metrics = metrics(port).await;
    let last: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("certkeeper_last_check_timestamp_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(unix_now() - last <= 62, "last check {} s ago", unix_now() - last);
    let log = daemon.stop();
    assert!(!socket.exists(), "the socket outlived the daemon:\n{log}");
}

/// After a fixed configuration the daemon still waited out the old backoff (up to 6 h). A
/// reload that changes the API settings, or a certificate, tries again at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fixed_password_is_tried_at_once_not_after_the_backoff() {
    let env = TestEnv::start("daemon-forgive").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.append_config("[daemon]\nretry_backoff = [\"6h\"]\n");
    let password = env.dir.join("api-password");
    let right = std::fs::read_to_string(&password).unwrap();
    std::fs::write(&password, "wrong\n").unwrap();
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 30, || daemon.log().contains("order failed")).await;
    std::fs::write(&password, right).unwrap();
    wait_until(&daemon, 30, || not_after(&env, "www.example.com").is_some()).await;
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1);
    let log = daemon.stop();
    assert!(log.contains("changed=www.example.com"), "{log}");
}

/// A reissue of every certificate through the control socket started one order per certificate
/// at once, whatever `order.concurrency` said: at 100,000 certificates, 100,000 orders. It now
/// keeps to it. With a concurrency of 1, the reload hooks (which take a second each) never
/// overlap, and every certificate is still reissued once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reissue_of_everything_through_the_control_socket_keeps_to_the_concurrency() {
    let env = TestEnv::start("daemon-control-bounded").await;
    let names = ["a.example.com", "b.example.com", "c.example.com"];
    let hooks = env.dir.join("reload.log");
    let reload = env.script(
        "reload.sh",
        &format!(
            "echo \"start $CERTKEEPER_NAME\" >> {log}\nsleep 1\necho \"end $CERTKEEPER_NAME\" >> {log}",
            log = hooks.display()
        ),
    );
    let certs: Vec<Cert> = names.iter().map(|n| Cert::autodns(n)).collect();
    env.write_config(&certs, &format!("reload = [\"{}\"]", reload.display()));
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text.replacen("[order]\n", "[order]\nconcurrency = 1\n", 1),
    )
    .unwrap();
    env.run_ok(&["run", "--once"]).await;
    std::fs::remove_file(&hooks).unwrap();

    let daemon = Daemon::start(&env);
    let socket = env.dir.join("state/control.sock");
    wait_until(&daemon, 30, || socket.exists()).await;
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}\n{}", stderr(&out), daemon.log());
    let log = daemon.stop();
    for n in names {
        assert_eq!(env.reissues(n), 1, "{n}:\n{log}");
    }
    let ran = std::fs::read_to_string(&hooks).unwrap();
    let lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), 6, "{ran}");
    for pair in lines.chunks(2) {
        let started = pair[0]
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("two at once:\n{ran}"));
        assert_eq!(pair[1], format!("end {started}"), "two at once:\n{ran}");
    }
}
