//! `certkeeper revoke`: a new certificate deployed first, then the old serial revoked, once,
//! whatever point a run is killed at.

use std::time::Duration;

use certkeeper::order;
use certkeeper::store::Step;

use crate::crash::kill_at;
use crate::support::*;

/// The revokes the simulator's ledger holds for `name`, by serial.
fn revokes(env: &TestEnv, name: &str) -> Vec<String> {
    env.sim
        .control()
        .ledger()
        .iter()
        .filter(|l| l.name == name && l.kind == "revoke")
        .map(|l| l.serial.clone().unwrap_or_default())
        .collect()
}

async fn row(env: &TestEnv) -> serde_json::Value {
    status_rows(&env.run_ok(&["status", "--json"]).await)[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_reissues_deploys_and_then_revokes_the_old_serial_once() {
    let env = TestEnv::start("revoke").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.use_shipped_settings();
    env.run_ok(&["run", "--once"]).await;
    let old = row(&env).await["serial"].as_str().unwrap().to_string();

    // Without a reason nothing is done.
    let out = env.run(&["revoke", name], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--reason"), "{}", stderr(&out));
    let out = env
        .run(&["revoke", "other.example.com", "--reason", "superseded"], &[])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("other.example.com is not a configured certificate"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.reissues(name), 0);
    assert!(revokes(&env, name).is_empty());

    let out = env.run_ok(&["revoke", name, "--reason", "key-compromise"]).await;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let row = row(&env).await;
    let new = row["serial"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    assert!(
        said.contains(&format!(
            "revoked serial {old} (key-compromise); serial {new} is deployed"
        )),
        "{said}"
    );
    env.assert_installed(name);
    assert_eq!(env.reissues(name), 1);
    assert_eq!(env.paid(name), 1, "a revoke buys nothing");
    assert_eq!(revokes(&env, name), std::slice::from_ref(&old));
    assert!(row["revocation"].is_null(), "{row}");
    assert_eq!(row["revoked"][0]["serial"], old, "{row}");
    assert_eq!(row["revoked"][0]["reason"], "key_compromise", "{row}");
    // The ledger's order: the reissue before the revoke.
    let kinds: Vec<String> = env
        .sim
        .control()
        .ledger()
        .iter()
        .filter(|l| l.name == name)
        .map(|l| l.kind.clone())
        .collect();
    assert_eq!(kinds, ["create", "reissue", "revoke"]);
}

/// Killed with SIGKILL at every point of the flow (the revocation's journal, each step of its
/// reissue and the answer of the reissue request, the revoke about to leave, its answer
/// arrived), then run again: one reissue, one revoke of the old serial, never of the one that is
/// served, and a matching pair installed. The revocation's own steps wait for nothing, so the
/// test's short poll intervals and a 2 s reconciliation grace (for the reissue killed at
/// `sending`) only save time here; the flow runs with the shipped settings in the test above,
/// and a reissue's lost answer with them in `reconcile` and `crash`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_every_point_a_revoke_never_revokes_the_served_certificate_nor_twice() {
    let env = TestEnv::start("revoke-crash").await;
    let mut points = vec![certkeeper::revoke::PAUSE_PLANNED];
    for step in Step::ALL {
        points.push(step.name());
        if step == Step::Sending {
            points.push(order::ANSWERED);
        }
    }
    points.push(certkeeper::revoke::PAUSE_SENDING);
    points.push(certkeeper::revoke::PAUSE_ANSWERED);
    for (i, point) in points.into_iter().enumerate() {
        let name = format!("r{i}.example.com");
        env.write_config(&[Cert::autodns(&name)], "");
        env.run_ok(&["run", "--once"]).await;
        let old = row(&env).await["serial"].as_str().unwrap().to_string();
        kill_at(&env, &["revoke", &name, "--reason", "key-compromise"], point).await;
        let pending = row(&env).await;
        assert_eq!(pending["revocation"]["serial"], old, "killed at {point}: {pending}");
        let status = env.run_ok(&["status"]).await;
        assert!(
            String::from_utf8_lossy(&status.stdout)
                .contains(&format!("revocation of {old} (key-compromise) under way")),
            "killed at {point}"
        );
        // The live certificate is never the one revoked, at any moment.
        for l in env
            .sim
            .control()
            .ledger()
            .iter()
            .filter(|l| l.name == name && l.kind == "revoke")
        {
            assert_ne!(
                l.serial.as_deref(),
                Some(pending["serial"].as_str().unwrap()),
                "killed at {point}"
            );
        }
        // Run again until done: a reissue killed at `sending` waits for the grace (exit 6).
        let mut tries = 0;
        loop {
            let out = env.run(&["revoke", &name, "--reason", "key-compromise"], &[]).await;
            match out.status.code() {
                Some(0) => break,
                Some(6) if point == Step::Sending.name() && tries < 30 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => panic!("killed at {point}, the next revoke exited {other:?}:\n{}", stderr(&out)),
            }
        }
        let done = row(&env).await;
        assert_ne!(done["serial"], old, "killed at {point}: {done}");
        assert!(done["revocation"].is_null(), "killed at {point}: {done}");
        assert_eq!(revokes(&env, &name), std::slice::from_ref(&old), "killed at {point}");
        assert_eq!(
            env.reissues(&name),
            1,
            "killed at {point}: {:?}",
            env.sim.control().ledger()
        );
        assert_eq!(env.paid(&name), 1, "killed at {point}");
        env.assert_installed(&name);
    }
}

/// A reissue killed at its last step has already written the new serial into the state while
/// `live/NAME` still points at the old certificate: the revocation names what is live (the
/// leaked key's certificate), not the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_after_a_reissue_killed_at_its_last_step_names_the_live_serial() {
    let env = TestEnv::start("revoke-installed").await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.run_ok(&["run", "--once"]).await;
    let old = row(&env).await["serial"].as_str().unwrap().to_string();
    kill_at(&env, &["--renew-now", name], Step::Installed.name()).await;
    env.run_ok(&["revoke", name, "--reason", "key-compromise"]).await;
    assert_eq!(revokes(&env, name), std::slice::from_ref(&old));
    let done = row(&env).await;
    assert_ne!(done["serial"], old, "{done}");
    assert_eq!(
        env.reissues(name),
        1,
        "the order killed at its last step was finished, not repeated"
    );
    env.assert_installed(name);
}
