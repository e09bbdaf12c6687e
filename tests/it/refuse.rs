use autodns_sim::{Faults, Mutation};

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spoiled_delivery_is_refused_and_the_old_files_stay() {
    let env = TestEnv::start("mutation").await;
    env.write_config(
        &[Cert {
            alt: &["example.com"],
            ..Cert::autodns("www.example.com")
        }],
        "",
    );
    env.run_ok(&["run", "--once"]).await;
    let live = env.live("www.example.com");
    let before: Vec<String> = ["cert.pem", "privkey.pem", "chain.pem"]
        .iter()
        .map(|f| std::fs::read_to_string(live.join(f)).unwrap())
        .collect();
    for mutation in [
        Mutation::WrongKey,
        Mutation::MissingSan,
        Mutation::Expired,
        Mutation::NotYetValid,
        Mutation::ChainOutOfOrder,
        Mutation::MissingIntermediate,
    ] {
        env.set_faults(Faults {
            mutation: Some(mutation),
            ..Faults::default()
        });
        let out = env.run(&["--renew-now"], &[]).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "{mutation:?} was not refused: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("refused the delivered certificate"),
            "{mutation:?}: {}",
            stderr(&out)
        );
        let after: Vec<String> = ["cert.pem", "privkey.pem", "chain.pem"]
            .iter()
            .map(|f| std::fs::read_to_string(live.join(f)).unwrap())
            .collect();
        assert_eq!(before, after, "{mutation:?} changed the installed files");
        env.assert_installed("www.example.com");
    }
    // A good delivery is installed again, and nothing was paid twice.
    env.set_faults(Faults::default());
    env.run_ok(&["--renew-now"]).await;
    env.assert_installed("www.example.com");
    assert_ne!(std::fs::read_to_string(live.join("cert.pem")).unwrap(), before[0]);
    assert_eq!(env.paid("www.example.com"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_reload_rolls_back_and_the_next_run_deploys() {
    let env = TestEnv::start("rollback").await;
    let flag = env.dir.join("broken");
    let script = env.script(
        "reload.sh",
        &format!(
            "[ ! -e {} ] || {{ echo 'config test failed' >&2; exit 1; }}",
            flag.display()
        ),
    );
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("reload = [\"{}\"]", script.display()),
    );
    env.run_ok(&["run", "--once"]).await;
    let s1 = env.serial("www.example.com");

    std::fs::write(&flag, "").unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(
        env.serial("www.example.com"),
        s1,
        "the live symlink was not rolled back"
    );
    env.assert_installed("www.example.com");
    let status = env.run_ok(&["status", "--json"]).await;
    let rows = status_rows(&status);
    assert_eq!(rows[0]["state"], "issued_not_deployed", "{rows}");
    assert!(
        rows[0]["last_error"].as_str().unwrap().contains("reload hook failed"),
        "{rows}"
    );

    // Fixing the server and running again deploys the issued certificate without a new order.
    std::fs::remove_file(&flag).unwrap();
    env.run_ok(&["run", "--once"]).await;
    assert_ne!(env.serial("www.example.com"), s1);
    env.assert_installed("www.example.com");
    assert_eq!(env.reissues("www.example.com"), 1);
}

/// A reload hook that appends the serial it is given to a file, and fails while a flag file
/// exists: the hook, the flag and the file.
fn serial_recorder(env: &TestEnv) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let flag = env.dir.join("broken");
    let seen = env.dir.join("serials");
    let script = env.script(
        "reload.sh",
        &format!(
            "echo \"$CERTKEEPER_SERIAL\" >> {}\n[ ! -e {} ] || exit 1",
            seen.display(),
            flag.display()
        ),
    );
    (script, flag, seen)
}

/// `--renew-now` on a certificate issued but not deployed only retried the deploy and exited 0:
/// the reissue asked for silently did not happen. It deploys the issued one, then reissues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_now_on_an_undeployed_certificate_deploys_it_then_reissues() {
    let env = TestEnv::start("renew-pending").await;
    let (script, flag, seen) = serial_recorder(&env);
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("reload = [\"{}\"]", script.display()),
    );
    env.run_ok(&["run", "--once"]).await;
    std::fs::write(&flag, "").unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let issued = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    std::fs::remove_file(&flag).unwrap();
    std::fs::remove_file(&seen).unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        env.reissues("www.example.com"),
        2,
        "the asked-for reissue did not happen"
    );
    let given: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(given.len(), 2, "{given:?}");
    assert_eq!(given[0], issued, "the issued certificate goes live first");
    assert_ne!(given[1], issued, "then the reissued one");
    assert_eq!(
        env.serial("www.example.com")
            .trim_start_matches("serial=")
            .trim_start_matches('0'),
        given[1].trim_start_matches('0')
    );
    env.assert_installed("www.example.com");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_order_is_retried_as_a_free_reissue_not_a_second_order() {
    let env = TestEnv::start("failedjob").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.append_config(
        "[daemon]
retry_backoff = [\"10s\"]",
    );
    env.set_faults(Faults {
        job_outcome: autodns_sim::JobOutcome::Fail,
        ..Faults::default()
    });
    let out = env.run(&["run", "--once"], &[]).await;
    let failed_at = std::time::Instant::now();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("ended FAILED"), "{}", stderr(&out));
    assert!(!env.live("www.example.com").exists());
    env.set_faults(Faults::default());
    // Right after a failure, nothing is due: the retry waits out its backoff. (The backoff is
    // long enough that a loaded CI machine cannot start the next run after it has passed.)
    env.run_ok(&["run", "--once"]).await;
    assert!(
        !env.live("www.example.com").exists(),
        "retried {:?} after the failure, within a 10 s backoff",
        failed_at.elapsed()
    );
    tokio::time::sleep(std::time::Duration::from_millis(10_500).saturating_sub(failed_at.elapsed())).await;
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1, "{:?}", env.sim.control().ledger());
    assert_eq!(env.reissues("www.example.com"), 1);
}

/// `on_failure` ran only from the daemon: cron and timer users, who run `run --once`, were never
/// told. A one-shot run now tells it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_run_tells_on_failure_too() {
    let env = TestEnv::start_with(
        "once-on-failure",
        Faults {
            job_outcome: autodns_sim::JobOutcome::Fail,
            rate_limit: 0.0,
            ..Faults::default()
        },
    )
    .await;
    let (hook, seen) = env.recorder("on-failure");
    env.write_config(&[Cert::autodns("www.example.com")], "");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", hook.display()));
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let told = calls(&seen);
    assert_eq!(told.len(), 1, "{told:?}");
    let told = &told[0];
    assert!(
        told.contains("CERTKEEPER_EVENT=failed") && told.contains("CERTKEEPER_FAILURES=1"),
        "{told}"
    );
    assert!(told.contains("ended FAILED"), "{told}");
}

/// After a rollback, `status` showed the serial of the certificate that was rolled back, and the
/// reload hook run after the rollback was given that serial too. Both now speak of the
/// certificate that is live. A first certificate whose reload failed (nothing to go back to) is
/// called what it is: installed, with the reload hook failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_rollback_status_and_the_hook_speak_of_the_live_certificate() {
    let env = TestEnv::start("rollback-truth").await;
    let name = "www.example.com";
    let (script, flag, seen) = serial_recorder(&env);
    env.write_config(&[Cert::autodns(name)], &format!("reload = [\"{}\"]", script.display()));
    // The first certificate, with the reload failing: it stays in place.
    std::fs::write(&flag, "").unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "installed_reload_failed", "{rows}");
    std::fs::remove_file(&flag).unwrap();
    env.run_ok(&["run", "--once"]).await;
    let live = |env: &TestEnv| env.serial(name).trim_start_matches("serial=").to_string();
    let s1 = live(&env);

    // A reissue whose reload fails is rolled back.
    std::fs::write(&flag, "").unwrap();
    std::fs::remove_file(&seen).unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(live(&env), s1, "not rolled back");
    let given: Vec<String> = std::fs::read_to_string(&seen)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(given.len(), 2, "{given:?}");
    assert_ne!(
        given[0].trim_start_matches('0'),
        s1.trim_start_matches('0'),
        "the new certificate's hook run: {given:?}"
    );
    assert_eq!(
        given[1].trim_start_matches('0'),
        s1.trim_start_matches('0'),
        "the hook run after the rollback must get the live serial: {given:?}"
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "issued_not_deployed", "{rows}");
    assert_eq!(
        rows[0]["serial"].as_str().unwrap().trim_start_matches('0'),
        s1.trim_start_matches('0'),
        "status must show the live serial: {rows}"
    );
    // What was issued is shown apart from what is live, and the state says what comes next.
    assert_eq!(
        rows[0]["issued"]["serial"].as_str().unwrap().trim_start_matches('0'),
        given[0].trim_start_matches('0'),
        "{rows}"
    );
    assert_ne!(rows[0]["issued"]["generation"], rows[0]["live_generation"], "{rows}");
    assert_eq!(rows[0]["state_text"], "issued, not deployed", "{rows}");
    assert!(
        rows[0]["next"]
            .as_str()
            .unwrap()
            .contains(rows[0]["next_renewal"].as_str().unwrap()),
        "{rows}"
    );
    let table = String::from_utf8_lossy(&env.run_ok(&["status"]).await.stdout).into_owned();
    assert!(
        table.contains("issued, not live: ") && table.contains("    next: the issued certificate is installed"),
        "{table}"
    );
}

/// After a propagation wait that failed, the validation records the DNS hook had published were
/// left in the zone until the retry. They are removed at once, and published again by the retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_not_served_in_time_are_cleaned_up_and_published_again_by_the_retry() {
    let env = TestEnv::start("propagation-cleanup").await;
    let calls = env.dir.join("dns-calls");
    // A hook that publishes nothing the first time (as a hidden primary that never notifies
    // its secondaries would), and for real afterwards.
    let publish = format!(
        "\"{BIN}\" demo-dns-hook \"{}\" \"{}\" \"$1\"",
        env.sim.sim_url(),
        env.dir.join("root.pem").display()
    );
    let hook = env.script(
        "dns-hook.sh",
        &format!(
            "echo \"$1 $CERTKEEPER_RECORD_NAME\" >> {calls}\nif [ -e {calls}.published ]; then exec {publish}; fi\n[ \"$1\" = cleanup ] && touch {calls}.published\nexit 0",
            calls = calls.display()
        ),
    );
    env.write_config(
        &[Cert::autodns("www.example.com")],
        &format!("dns = \"hook\"\ndns_hook = [\"{}\"]", hook.display()),
    );
    let text = std::fs::read_to_string(env.config_path())
        .unwrap()
        .replace("propagation_timeout = \"20s\"", "propagation_timeout = \"2s\"");
    std::fs::write(env.config_path(), text).unwrap();
    env.append_config("[daemon]\nretry_backoff = [\"1s\"]");
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let seen = std::fs::read_to_string(&calls).unwrap();
    let actions: Vec<&str> = seen.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(actions, ["present", "cleanup"], "{seen}");
    assert!(
        env.sim.control().ledger().is_empty(),
        "nothing is ordered before DNS is seen"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    env.run_ok(&["run", "--once"]).await;
    env.assert_installed("www.example.com");
    let seen = std::fs::read_to_string(&calls).unwrap();
    let actions: Vec<&str> = seen.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(actions, ["present", "cleanup", "present", "cleanup"], "{seen}");
    assert_eq!(env.paid("www.example.com"), 1);
}

/// A wrong password showed as "ordering (Create, at keyed)", as if all were well. A first order
/// now stops at the account's search, before it begins: "failed". A reissue under way that
/// fails is "retrying", at its step, with the live certificate still live. Both carry the API's
/// words in their last error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_shows_as_failed_or_retrying_with_the_apis_words() {
    let env = TestEnv::start("wrong-password").await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let password = env.dir.join("api-password");
    let right = std::fs::read_to_string(&password).unwrap();
    std::fs::write(&password, "wrong\n").unwrap();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "failed", "{rows}");
    assert!(rows[0]["last_error"].as_str().unwrap().contains("E0101"), "{rows}");
    assert!(rows[0]["next"].as_str().unwrap().contains("again"), "{rows}");
    assert!(env.sim.control().ledger().is_empty());

    std::fs::write(&password, &right).unwrap();
    env.run_ok(&["--renew-now"]).await;
    env.assert_installed("www.example.com");
    let serial = env.serial("www.example.com");
    std::fs::write(&password, "wrong\n").unwrap();
    let out = env.run(&["--renew-now"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert!(
        rows[0]["state_text"]
            .as_str()
            .unwrap()
            .starts_with("retrying (reissue, failed at "),
        "{rows}"
    );
    assert!(rows[0]["last_error"].as_str().unwrap().contains("E0101"), "{rows}");
    assert_eq!(env.serial("www.example.com"), serial, "the live certificate stays");
}
