//! A paid request whose answer was lost, against a hostile network or API (a proxy in front of
//! the simulator, which stays the ground truth of what was paid): searches that fail through
//! the grace, a host clock ahead of the API's, unparseable answers to every create, and a kill
//! right after the journal reached `sending`, the last with certkeeper's shipped settings.

use std::time::{Duration, Instant};

use crate::proxy::{Act, Proxy, empty_body, error_body};
use crate::support::*;

/// Starts a proxy in front of `env`'s simulator and points the config at it.
async fn proxied(env: &TestEnv, rule: crate::proxy::Rule) -> Proxy {
    let ca = std::fs::read(env.dir.join("root.pem")).unwrap();
    let proxy = Proxy::start(&env.sim.api_url, &ca, rule).await;
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), text.replace(&env.sim.api_url, &proxy.url)).unwrap();
    proxy
}

/// Whether a request is one of the places a lost answer is looked for.
fn is_search(method: &str, path: &str) -> bool {
    (method == "POST" && path.ends_with("/_search")) || (method == "GET" && path == "/poll")
}

/// `rule`, except for the search certkeeper makes before a name's first order (whether the
/// account already holds one), which is answered as the API would: these tests are about what
/// follows a paid request.
fn after_first_create(rule: crate::proxy::Rule) -> crate::proxy::Rule {
    let created = std::sync::Mutex::new(std::collections::HashSet::<String>::new());
    let name_in = |body: &str| -> Option<String> {
        let v: serde_json::Value = serde_json::from_str(body).ok()?;
        v["name"]
            .as_str()
            .or(v["filters"][0]["value"].as_str())
            .map(str::to_string)
    };
    Box::new(move |method: &str, path: &str, body: &str| {
        let mut created = created.lock().unwrap();
        match (method, path, name_in(body)) {
            ("POST", "/certificate", Some(name)) => {
                created.insert(name);
            }
            ("POST", "/certificate/_search", Some(name)) if !created.contains(&name) => return Act::Forward,
            _ => {}
        }
        drop(created);
        rule(method, path, body)
    })
}

/// A hostile API: every create takes effect and is answered with an unparseable 200, and every
/// search (and the poll queue) finds nothing.
fn unparseable_creates_found_nowhere() -> crate::proxy::Rule {
    Box::new(|method: &str, path: &str, _: &str| {
        if method == "POST" && path == "/certificate" {
            Act::ForwardThenAnswer(200, "<html>Order received</html>".into())
        } else if is_search(method, path) {
            Act::Answer(200, empty_body("S0000"))
        } else {
            Act::Forward
        }
    })
}

/// A bad network and API: every create takes effect with its answer lost, and every search (and
/// the poll queue) answers 500.
fn lost_creates_and_failing_searches() -> crate::proxy::Rule {
    after_first_create(Box::new(|method: &str, path: &str, _: &str| {
        if is_search(method, path) {
            Act::Answer(500, error_body("E0000"))
        } else if method == "POST" && path == "/certificate" {
            Act::ForwardThenDrop
        } else {
            Act::Forward
        }
    }))
}

/// The certificate's state as `status --json` reports it.
async fn state_of(env: &TestEnv, name: &str) -> String {
    let out = env.run(&["status", "--json"], &[]).await;
    let rows = status_rows(&out);
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["state"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// Every search (and the poll queue) answers 500 while creates take effect with their answers
/// lost; another create never arrives at all. The old code marked both "never arrived" once the
/// grace had passed and sent them again. Now nothing is sent again, both are "payment
/// unresolved" (`on_failure` told once), and `certkeeper resolve` settles one as its job and the
/// other as never arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_failing_through_the_grace_leave_payment_unresolved_and_resolve_settles_both_ways() {
    let env = TestEnv::start("unresolved").await;
    let (hook, calls_file) = env.recorder("on-failure");
    env.write_config(
        &[Cert::autodns("arrived.example.com"), Cert::autodns("lost.example.com")],
        "",
    );
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]", hook.display()));
    let hostile = || -> crate::proxy::Rule {
        after_first_create(Box::new(|method: &str, path: &str, body: &str| {
            if is_search(method, path) {
                Act::Answer(500, error_body("E0000"))
            } else if method == "POST" && path == "/certificate" && body.contains("lost.example.com") {
                Act::Drop
            } else if method == "POST" && path == "/certificate" {
                Act::ForwardThenDrop
            } else {
                Act::Forward
            }
        }))
    };
    let proxy = proxied(&env, hostile()).await;

    for round in 0..3 {
        let out = env.run(&["run", "--once"], &[]).await;
        assert_eq!(out.status.code(), Some(6), "round {round}: {}", stderr(&out));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for name in ["arrived.example.com", "lost.example.com"] {
        assert_eq!(
            proxy.count("POST", "/certificate", name),
            1,
            "{name}: a create was sent again although no search ever answered"
        );
        assert!(state_of(&env, name).await == "payment_unresolved", "{name}");
    }
    assert_eq!(env.paid("arrived.example.com"), 1);
    assert_eq!(env.paid("lost.example.com"), 0);
    let told = std::fs::read_to_string(&calls_file).unwrap_or_default();
    assert_eq!(
        told.matches("CERTKEEPER_EVENT=payment_unresolved").count(),
        2,
        "on_failure is told once per certificate: {told}"
    );

    // The operator settles them: one as the job the simulator holds, one as never arrived.
    let job = env
        .sim
        .control()
        .ledger()
        .iter()
        .find(|l| l.name == "arrived.example.com")
        .unwrap()
        .job_id;
    let wrong = env
        .run(&["resolve", "arrived.example.com", "--job", "999999"], &[])
        .await;
    assert_ne!(wrong.status.code(), Some(0), "a job that does not exist is not taken");
    assert!(state_of(&env, "arrived.example.com").await == "payment_unresolved");
    env.run_ok(&["resolve", "arrived.example.com", "--job", &job.to_string()])
        .await;
    env.run_ok(&["resolve", "lost.example.com", "--never-arrived"]).await;
    let none = env.run(&["resolve", "lost.example.com", "--never-arrived"], &[]).await;
    assert_ne!(none.status.code(), Some(0), "nothing is left to resolve");

    proxy.set(Box::new(|_: &str, _: &str, _: &str| Act::Forward));
    env.run_ok(&["run", "--once"]).await;
    for name in ["arrived.example.com", "lost.example.com"] {
        env.assert_installed(name);
        assert_eq!(env.paid(name), 1, "{name}: {:?}", env.sim.control().ledger());
    }
    assert_eq!(proxy.count("POST", "/certificate", "arrived.example.com"), 1);
    assert_eq!(proxy.count("POST", "/certificate", "lost.example.com"), 2);
}

/// A host clock 10 minutes ahead of the API's: every `created` bound certkeeper sends is 10
/// minutes later than the API's own clock would put it. The old window (`created >= sent -
/// 120 s`) missed the job, and the order was sent again after the grace. Matching on name,
/// action and ids finds it, also where the API truncates `created` to the day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_clock_ten_minutes_ahead_does_not_hide_the_order() {
    for precision in [
        autodns_sim::CreatedPrecision::Second,
        autodns_sim::CreatedPrecision::Day,
    ] {
        clock_ahead(precision).await;
    }
}

async fn clock_ahead(precision: autodns_sim::CreatedPrecision) {
    let env = TestEnv::start_with(
        &format!("clock-ahead-{precision:?}"),
        autodns_sim::Faults {
            rate_limit: 0.0,
            created_precision: precision,
            ..Default::default()
        },
    )
    .await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    fn ahead(body: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(body).unwrap();
        for f in v["filters"].as_array_mut().into_iter().flatten() {
            if f["key"] == "created"
                && let Some(t) = f["value"].as_str().and_then(certkeeper::api::wire::parse_time)
            {
                f["value"] = certkeeper::api::wire::format_time(t + Duration::from_secs(600)).into();
            }
        }
        v.to_string()
    }
    // The poll queue shows nothing until the jobs were searched, so that the searches must find
    // the order; then the order follows its job through the queue as usual.
    let searched = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = searched.clone();
    let proxy = proxied(
        &env,
        after_first_create(Box::new(move |method: &str, path: &str, _: &str| {
            use std::sync::atomic::Ordering;
            match (method, path) {
                ("POST", "/certificate") => Act::ForwardThenDrop,
                ("GET", "/poll") if !seen.load(Ordering::SeqCst) => Act::Answer(200, empty_body("S0905")),
                ("POST", p) if p.ends_with("_search") => {
                    seen.store(true, Ordering::SeqCst);
                    Act::Rewrite(ahead)
                }
                _ => Act::Forward,
            }
        })),
    )
    .await;
    let mut codes = Vec::new();
    let mut last = String::new();
    for _ in 0..3 {
        let out = env.run(&["run", "--once"], &[]).await;
        codes.push(out.status.code());
        last = stderr(&out);
        if out.status.code() == Some(0) {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&Some(0)),
        "{precision:?}: {codes:?}\n{last}\n{:?}\n{:?}",
        env.sim.control().dns_records(),
        env.sim.control().requests()
    );
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1, "{:?}", env.sim.control().ledger());
    assert_eq!(proxy.count("POST", "/certificate", ""), 1);
    assert!(searched.load(std::sync::atomic::Ordering::SeqCst));
}

/// Every create is answered with an unparseable 200 while every search finds nothing: the old
/// code sent 28 paid creates in one run with `max_paid_orders = 1`. A 200 means the request
/// arrived, so no search can prove the opposite: one create, then "payment unresolved".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparseable_answers_to_every_create_never_lead_to_a_second_paid_request() {
    let env = TestEnv::start("unparseable").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let proxy = proxied(&env, unparseable_creates_found_nowhere()).await;
    for round in 0..4 {
        let out = env.run(&["run", "--once"], &[]).await;
        assert_eq!(out.status.code(), Some(6), "round {round}: {}", stderr(&out));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(proxy.count("POST", "/certificate", ""), 1);
    assert_eq!(env.paid("www.example.com"), 1);
    assert!(state_of(&env, "www.example.com").await == "payment_unresolved");
}

/// With certkeeper's shipped settings (grace, timeouts, intervals): a create and a reissue
/// killed right after the journal reached `sending` (before the request left), then `run
/// --once` every few seconds, as cron or an impatient operator would. No run lasts more than 2
/// minutes (each looks for a minute at most and exits 6), nothing is sent before the grace has
/// passed, and each request is sent exactly once as soon as the complete searches allow. Beside
/// it, over the whole shipped grace, the unparseable-create API of the test above and an API
/// whose searches all fail: one create each, then "payment unresolved".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_sending_runs_every_few_seconds_never_block_and_send_once_after_the_grace() {
    const GRACE: Duration = Duration::from_secs(600);
    let env = TestEnv::start("kill-sending").await;
    let hostile = TestEnv::start("unparseable-shipped").await;
    let failing = TestEnv::start("failing-searches-shipped").await;

    // A create in each DNS mode, and a reissue, each killed at `sending`.
    env.write_config(&[Cert::autodns("r.example.com")], "");
    env.use_shipped_settings();
    env.run_ok(&["run", "--once"]).await;
    let first = env.serial("r.example.com");
    let mut killed = Vec::new();
    for (cert, args) in [
        (Cert::autodns("c.example.com"), vec!["run", "--once"]),
        (Cert::hook("h.example.com"), vec!["run", "--once"]),
        (Cert::autodns("r.example.com"), vec!["--renew-now", "r.example.com"]),
    ] {
        env.write_config(&[cert], "");
        env.use_shipped_settings();
        crate::crash::kill_at(&env, &args, "sending").await;
        killed.push(Instant::now());
    }
    env.write_config(
        &[
            Cert::autodns("c.example.com"),
            Cert::hook("h.example.com"),
            Cert::autodns("r.example.com"),
        ],
        "",
    );
    env.use_shipped_settings();

    hostile.write_config(&[Cert::autodns("www.example.com")], "");
    hostile.use_shipped_settings();
    let proxy = proxied(&hostile, unparseable_creates_found_nowhere()).await;

    failing.write_config(&[Cert::autodns("www.example.com")], "");
    failing.use_shipped_settings();
    let failing_proxy = proxied(&failing, lost_creates_and_failing_searches()).await;

    let done = || {
        env.paid("c.example.com") == 1
            && env.paid("h.example.com") == 1
            && env.reissues("r.example.com") == 1
            && env.live("c.example.com").join("cert.pem").exists()
            && env.live("h.example.com").join("cert.pem").exists()
            && env.serial("r.example.com") != first
    };
    let mut longest = Duration::ZERO;
    let mut sent_at = None;
    let mut codes = Vec::new();
    while killed[0].elapsed() < GRACE + Duration::from_secs(240) {
        let started = Instant::now();
        // `TestEnv::run` fails the test if a run takes more than 120 s.
        let (out, other, third) = tokio::join!(
            env.run(&["run", "--once"], &[]),
            hostile.run(&["run", "--once"], &[]),
            failing.run(&["run", "--once"], &[])
        );
        longest = longest.max(started.elapsed());
        codes.push(out.status.code());
        for (what, o) in [("unparseable answers", &other), ("failing searches", &third)] {
            assert_eq!(o.status.code(), Some(6), "the run against {what}: {}", stderr(o));
        }
        if sent_at.is_none() && env.paid("c.example.com") == 1 {
            sent_at = Some(killed[0].elapsed());
        }
        if done() && out.status.code() == Some(0) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(
        done(),
        "not settled: exit codes {codes:?}; {:?}",
        env.sim.control().ledger()
    );
    let sent_at = sent_at.unwrap();
    assert!(
        sent_at >= GRACE,
        "the create was sent again {sent_at:?} after the kill, before the grace had passed"
    );
    assert!(
        sent_at <= GRACE + Duration::from_secs(150),
        "the create was sent only {sent_at:?} after the kill"
    );
    assert!(codes.iter().filter(|c| **c == Some(6)).count() >= 5, "{codes:?}");
    assert!(longest <= Duration::from_secs(120), "a run took {longest:?}");
    for name in ["c.example.com", "h.example.com", "r.example.com"] {
        env.assert_installed(name);
    }
    assert_eq!(env.paid("r.example.com"), 1);
    assert_eq!(
        proxy.count("POST", "/certificate", ""),
        1,
        "the hostile API got a second create"
    );
    assert_eq!(hostile.paid("www.example.com"), 1);
    assert!(state_of(&hostile, "www.example.com").await == "payment_unresolved");
    assert_eq!(
        failing_proxy.count("POST", "/certificate", ""),
        1,
        "a create was sent again while every search failed"
    );
    assert_eq!(failing.paid("www.example.com"), 1);
    assert!(state_of(&failing, "www.example.com").await == "payment_unresolved");
}

/// prepareOrder refuses the CSR on one line (the help page's form): certkeeper tries once more
/// with the form InterNetX's SDKs send (`BEGIN\r\nbody\r\nEND`), orders with the form that
/// worked, and starts with it next time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_refused_on_one_line_is_sent_in_the_sdk_form_and_that_is_remembered() {
    let env = TestEnv::start("csr-form").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let proxy = proxied(
        &env,
        Box::new(|method: &str, path: &str, body: &str| {
            let one_line = serde_json::from_str::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["plain"].as_str().map(|csr| !csr.contains("\r\n")))
                .unwrap_or(false);
            if method == "POST" && path == "/certificate/_prepareOrder" && one_line {
                Act::Answer(
                    400,
                    r#"{"stid":"p","status":{"code":"E400110","text":"CSR could not be parsed","type":"ERROR"},"messages":[{"text":"CSR could not be parsed","code":"EF400110","status":"ERROR"}]}"#.into(),
                )
            } else {
                Act::Forward
            }
        }),
    )
    .await;
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed("www.example.com");
    assert_eq!(proxy.count("POST", "/certificate/_prepareOrder", ""), 2);
    assert_eq!(
        proxy.count("POST", "/certificate", "-----BEGIN CERTIFICATE REQUEST-----\\r\\nMII"),
        1,
        "the order carries the form prepareOrder took"
    );
    env.run_ok(&["--renew-now", "www.example.com"]).await;
    assert_eq!(
        proxy.count("POST", "/certificate/_prepareOrder", ""),
        3,
        "the reissue starts with the form that worked"
    );
    assert_eq!(env.reissues("www.example.com"), 1);
}
