use std::time::Duration;

use autodns_sim::{FaultKind, Faults};
use certkeeper::order;
use certkeeper::store::Step;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::*;

/// The journal's steps in order, and after `sending` the point `answered`: the paid request's
/// answer arrived but is not journaled.
fn pause_points() -> Vec<&'static str> {
    let mut points = Vec::new();
    for step in Step::ALL {
        points.push(step.name());
        if step == Step::Sending {
            points.push(order::ANSWERED);
        }
    }
    points
}

/// Starts certkeeper paused at `step`, waits until it says so, and kills it with SIGKILL by PID.
pub(crate) async fn kill_at(env: &TestEnv, args: &[&str], step: &str) {
    let mut child = tokio::process::Command::new(BIN)
        .args(args)
        .env("CERTKEEPER_CONFIG", env.config_path())
        .env(order::PAUSE_ENV, step)
        .env("CERTKEEPER_LOG", "warn")
        .current_dir(&env.dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let paused = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(&format!("paused at {step} ")) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(paused, "certkeeper {args:?} never reached step {step}");
    // SIGKILL, by the PID we started.
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.code().is_none(), "certkeeper {pid} was not killed: {exit:?}");
}

/// Kills a create and then a reissue at every step, in one DNS mode (the steps written to disk
/// differ between the modes), and checks each resumes to one paid order and a new certificate,
/// with certkeeper's shipped settings. A kill at `sending` (before the request left) can be
/// settled only after the shipped grace of 10 minutes: that point is killed, in both modes and
/// for a create and a reissue, by `reconcile::killed_after_sending_...`, which waits it out once
/// for all of them.
async fn kill_at_every_step(env: &TestEnv, hook: bool, prefix: &str) {
    for (i, step) in pause_points().into_iter().enumerate() {
        if step == Step::Sending.name() {
            continue;
        }
        let name = format!("{prefix}{i}.example.com");
        let cert = if hook { Cert::hook(&name) } else { Cert::autodns(&name) };
        env.write_config(&[cert], "");
        env.use_shipped_settings();

        // A new order, killed at this step, then resumed by the next run.
        kill_at(env, &["run", "--once"], step).await;
        env.run_ok(&["run", "--once"]).await;
        env.assert_installed(&name);
        assert_eq!(
            env.paid(&name),
            1,
            "create killed at {step}: {:?}",
            env.sim.control().ledger()
        );
        let first = env.serial(&name);

        // A reissue, killed at this step, then resumed.
        kill_at(env, &["--renew-now", &name], step).await;
        env.run_ok(&["run", "--once"]).await;
        env.assert_installed(&name);
        assert_eq!(
            env.reissues(&name),
            1,
            "reissue killed at {step}: {:?}",
            env.sim.control().ledger()
        );
        assert_eq!(env.paid(&name), 1);
        assert_ne!(
            env.serial(&name),
            first,
            "reissue killed at {step} did not install a new certificate"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_journal_step_it_resumes_and_never_pays_twice() {
    // The two DNS modes side by side, each with its own simulator and configuration.
    let (hook, autodns) = (
        TestEnv::start("crash-hook").await,
        TestEnv::start("crash-autodns").await,
    );
    tokio::join!(
        kill_at_every_step(&hook, true, "h"),
        kill_at_every_step(&autodns, false, "a")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ghost_commits_on_create_and_reissue_are_adopted_not_repeated_with_the_shipped_settings() {
    let env = TestEnv::start("ghost").await;
    env.write_config(&[Cert::autodns("www.example.com"), Cert::hook("shop.example.net")], "");
    env.use_shipped_settings();
    let ghost = |route: &str| Faults {
        routes: [(route.to_string(), 1.0)].into(),
        kinds: vec![FaultKind::Ghost],
        ..Faults::default()
    };
    env.set_faults(ghost("POST /certificate"));
    env.run_ok(&["run", "--once"]).await;
    for name in ["www.example.com", "shop.example.net"] {
        env.assert_installed(name);
        assert_eq!(env.paid(name), 1, "{:?}", env.sim.control().ledger());
    }
    assert!(
        env.sim
            .control()
            .requests()
            .iter()
            .any(|r| r.fault.as_deref() == Some("ghost")),
        "no ghost was injected"
    );

    env.set_faults(ghost("PUT /certificate/{id}"));
    env.run_ok(&["--renew-now"]).await;
    for name in ["www.example.com", "shop.example.net"] {
        env.assert_installed(name);
        assert_eq!(env.reissues(name), 1, "{:?}", env.sim.control().ledger());
    }
}

/// A renewal of the term whose answer is lost (it took effect): adopted, not paid twice. A month
/// is 4 s, so a 12-month term ends 48 s after the order and the renewal is due about 32 s in
/// (the next one some 40 s later); the simulator shows `payable` (the term's end), as the 2022
/// sample does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_commit_on_a_term_renewal_is_adopted_not_repeated() {
    use autodns_sim::{Durations, SimConfig};
    let env = TestEnv::start_sim(
        "ghost-renew",
        SimConfig {
            durations: Durations {
                month: std::time::Duration::from_secs(4),
                cert_validity: std::time::Duration::from_secs(60),
                ..Durations::default()
            },
            faults: Faults {
                rate_limit: 0.0,
                payable: true,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    env.write_config(&[Cert::autodns("www.example.com")], "renew_term = true");
    env.use_shipped_settings();
    env.run_ok(&["run", "--once"]).await;
    env.set_faults(Faults {
        routes: [("PUT /certificate/{id}/_renew".to_string(), 1.0)].into(),
        kinds: vec![FaultKind::Ghost],
        payable: true,
        ..Faults::default()
    });
    let renewed = |env: &TestEnv| env.sim.control().ledger().iter().filter(|l| l.kind == "renew").count();
    for _ in 0..40 {
        if renewed(&env) > 0 {
            break;
        }
        let _ = env.run(&["run", "--once"], &[]).await;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert_eq!(renewed(&env), 1, "{:?}", env.sim.control().ledger());
    env.set_faults(Faults {
        payable: true,
        ..Faults::default()
    });
    // The run that sent it, or the next, adopts the renewal and installs its certificate.
    let mut out = env.run(&["run", "--once"], &[]).await;
    for _ in 0..5 {
        if out.status.code() == Some(0) {
            break;
        }
        out = env.run(&["run", "--once"], &[]).await;
    }
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        env.sim
            .control()
            .requests()
            .iter()
            .any(|r| r.fault.as_deref() == Some("ghost")),
        "no ghost was injected"
    );
    assert_eq!(
        renewed(&env),
        1,
        "the renewal was paid twice: {:?}",
        env.sim.control().ledger()
    );
    assert_eq!(env.paid("www.example.com"), 2, "one create and one renewal");
    env.assert_installed("www.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_fault_kind_on_every_route_each_certificate_is_paid_once() {
    let faults = Faults {
        rate: 0.25,
        rate_limit: 0.0,
        ..Faults::default()
    };
    let env = TestEnv::start_with("chaos", faults).await;
    let names = ["a.example.com", "b.example.net", "c.example.org", "d.example.com"];
    let certs: Vec<Cert<'_>> = names
        .iter()
        .enumerate()
        .map(|(i, n)| if i % 2 == 0 { Cert::autodns(n) } else { Cert::hook(n) })
        .collect();
    env.write_config(&certs, "");
    env.append_config(
        "[daemon]
retry_backoff = [\"1s\"]",
    );
    let mut ok = false;
    for _ in 0..15 {
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let out = env.run(&["run", "--once"], &[]).await;
        if out.status.code() == Some(0) && names.iter().all(|n| env.live(n).join("cert.pem").exists()) {
            ok = true;
            break;
        }
    }
    assert!(ok, "not every certificate was issued within 15 runs");
    for n in names {
        env.assert_installed(n);
        assert_eq!(env.paid(n), 1, "{n}: {:?}", env.sim.control().ledger());
    }
    let faulted = env
        .sim
        .control()
        .requests()
        .iter()
        .filter(|r| r.fault.is_some())
        .count();
    assert!(faulted >= 5, "only {faulted} faults were injected");
}

/// The spend guard ends an order in flight after the DNS hook published its records: like every
/// other ending, it runs the hook's `cleanup`, so that no validation record stays in the zone.
/// (A new order the guard would refuse is not begun at all: see `consent`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spend_guard_refusal_removes_the_records_the_dns_hook_published() {
    let env = TestEnv::start("guard").await;
    let name = "guard.example.com";
    env.write_config(&[Cert::hook(name)], "");
    // The demo hook, wrapped so that each call is written down: the action and the record.
    let calls = env.dir.join("hook.calls");
    let wrapper = env.script(
        "dns-hook.sh",
        &format!(
            "for a; do action=$a; done\necho \"$action $CERTKEEPER_RECORD_NAME\" >> {}\nexec \"$@\"",
            calls.display()
        ),
    );
    let config = std::fs::read_to_string(env.config_path()).unwrap();
    let wrapped = config.replace("dns_hook = [\"", &format!("dns_hook = [\"{}\", \"", wrapper.display()));
    assert_ne!(config, wrapped);
    std::fs::write(env.config_path(), wrapped).unwrap();
    // A create already paid in this term, and another create in flight (begun by a run that
    // crashed before it was sent), which the guard (max_paid_orders = 1) refuses when it comes
    // to sending it.
    env.save_paid_create(
        name,
        Some(
            serde_json::from_value(serde_json::json!({
                "id": "guard-1", "kind": "create", "step": "planned", "started_at": 0
            }))
            .unwrap(),
        ),
    );

    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(stderr(&out).contains("spend guard"), "{}", stderr(&out));
    assert_eq!(env.paid(name), 0, "{:?}", env.sim.control().ledger());
    let calls = std::fs::read_to_string(&calls).unwrap_or_default();
    let actions: Vec<&str> = calls.lines().filter_map(|l| l.split(' ').next()).collect();
    assert!(actions.contains(&"present"), "the DNS hook never published: {calls}");
    assert_eq!(
        actions.last(),
        Some(&"cleanup"),
        "the record the DNS hook published stays after the spend guard's refusal: {calls}"
    );
    assert!(!env.live(name).exists());
}

/// Orders waiting for the API's rate limit used to be journaled as `sending` while they waited:
/// a run killed then left each with a "lost answer" that only the 10-minute grace could settle,
/// though nothing had left. The slot is now taken before the journal is written: killed while
/// the others wait their turn, the next run (with the shipped grace) sends them at once, each
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_killed_while_waiting_for_the_rate_limit_have_sent_nothing_and_go_on_at_once() {
    let env = TestEnv::start("crash-rate-limit").await;
    let names: Vec<String> = (0..6).map(|i| format!("w{i}.example.com")).collect();
    let certs: Vec<Cert<'_>> = names.iter().map(|n| Cert::autodns(n)).collect();
    env.write_config(&certs, "");
    env.run_ok(&["run", "--once"]).await;
    env.use_shipped_settings();
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(
        env.config_path(),
        text.replacen("[api]\n", "[api]\nrate_limit = 1.0\n", 1),
    )
    .unwrap();
    // The first reissue to be accepted stops the run; the others wait for their turn then.
    kill_at(&env, &["--renew-now"], Step::Accepted.name()).await;
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for n in &names {
        assert_eq!(env.reissues(n), 1, "{n}: {:?}", env.sim.control().ledger());
        env.assert_installed(n);
    }
}

/// A create whose contact could not be made (the API answered 503) had its paid request on
/// record already, never sent: the next run's spend guard then refused the create as a second
/// paid one and waited for the operator. Nothing of the request is recorded before its body is
/// built now: the next run orders it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_that_could_not_be_made_leaves_no_paid_request_on_record() {
    let env = TestEnv::start("crash-contact").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.use_shipped_settings();
    env.set_faults(Faults {
        routes: [("POST /sslcontact".to_string(), 1.0)].into(),
        kinds: vec![FaultKind::Status503],
        ..Faults::default()
    });
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("creating an SSL contact"), "{}", stderr(&out));
    env.set_faults(Faults::default());
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1);
}

/// The names of the temp files and directories (`.tmp-*`) in `dir`, each with its mode.
fn temps_in(dir: &std::path::Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        .map(|e| {
            let mode = e.metadata().unwrap().permissions().mode() & 0o777;
            (e.file_name().to_string_lossy().into_owned(), mode)
        })
        .collect()
}

/// What a real kill leaves, not a planted copy of it: a run killed after a file's new copy is
/// written and before it is renamed into place leaves that temp file (its own name, 0600, the
/// forced reissue's journal in it) and the state it was to replace, whole; one killed
/// after a new generation's files are written and before its directory is renamed leaves that
/// directory. The next run, with the shipped settings, sweeps both, and the order goes on once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_run_killed_before_a_rename_leaves_is_swept_by_the_next_and_nothing_is_lost() {
    let env = TestEnv::start("crash-rename").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.use_shipped_settings();
    env.run_ok(&["run", "--once"]).await;
    let first = env.serial(name);
    let certs = env.dir.join("state/certs");
    assert!(temps_in(&certs).is_empty());

    // Killed at the first replacement, the forced reissue's journal: its temp file is there,
    // the state is the installed certificate's, and nothing was asked of the API.
    kill_at(&env, &["--renew-now", name], "replacing").await;
    let left = temps_in(&certs);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, 0o600, "{left:?}");
    let text = std::fs::read_to_string(certs.join(&left[0].0)).unwrap();
    assert!(
        text.contains("\"step\": \"planned\"") && text.contains("\"kind\": \"reissue\""),
        "{text}"
    );
    assert_eq!(env.reissues(name), 0);
    let out = env.run_ok(&["status", "--json"]).await;
    assert_eq!(status_rows(&out)[0]["state"], "deployed", "{}", status_rows(&out));

    // The next run sweeps it. The forced reissue was never on disk, so nothing is due.
    env.run_ok(&["run", "--once"]).await;
    assert!(temps_in(&certs).is_empty(), "{:?}", temps_in(&certs));
    assert_eq!(env.reissues(name), 0);
    assert_eq!(env.serial(name), first);
    env.assert_installed(name);

    // Killed with the new generation's files written: its directory is left, the key in it
    // 0600; the journal (at `job_done`) resumes, the download and the generation are made
    // again, and the left directory is swept.
    let generations = env.dir.join(format!("live/.generations/{name}"));
    kill_at(&env, &["--renew-now", name], "generation_written").await;
    let left = temps_in(&generations);
    assert_eq!(left.len(), 1, "{left:?}");
    let key = generations.join(&left[0].0).join("privkey.pem");
    assert!(std::fs::read_to_string(&key).unwrap().contains("PRIVATE KEY"));
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    assert_eq!(env.serial(name), first, "the left generation went live");
    env.run_ok(&["run", "--once"]).await;
    assert!(temps_in(&generations).is_empty(), "{:?}", temps_in(&generations));
    assert_eq!(env.reissues(name), 1, "{:?}", env.sim.control().ledger());
    assert_eq!(env.paid(name), 1);
    assert_ne!(env.serial(name), first);
    env.assert_installed(name);
}
