//! Mass reissues (`--renew-now --all`, `--match`, `--issued-before`): every selected
//! certificate reissued exactly once, through kills and resumes, with its progress shown.

use std::process::Command;
use std::time::Duration;

use crate::crash::kill_at;
use crate::support::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("c{i}.example.com")).collect()
}

fn config(env: &TestEnv, names: &[String]) {
    let certs: Vec<Cert<'_>> = names.iter().map(|n| Cert::autodns(n)).collect();
    env.write_config(&certs, "");
}

/// The campaign under a pseudo-terminal (util-linux `script`): what the terminal was sent.
fn under_a_terminal(env: &TestEnv, args: &str) -> (Option<i32>, String) {
    let out = Command::new("script")
        .args(["-qefc", &format!("{BIN} {args}"), "/dev/null"])
        .env("CERTKEEPER_CONFIG", env.config_path())
        .env("CERTKEEPER_LOG", "error")
        .current_dir(&env.dir)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_shows_a_live_line_on_a_terminal_and_plain_lines_elsewhere() {
    let env = TestEnv::start("campaign-show").await;
    let all = names(6);
    config(&env, &all);
    env.run_ok(&["run", "--once"]).await;
    let before: Vec<String> = all.iter().map(|n| env.serial(n)).collect();

    let (code, tty) = under_a_terminal(&env, "--renew-now --all");
    assert_eq!(code, Some(0), "{tty}");
    // The live line is rewritten in place (carriage return, erase line), with done/total and
    // the time left.
    assert!(tty.contains("\r\x1b[2Kcampaign: 0/6 done, 0 failed, about "), "{tty:?}");
    assert!(tty.contains("\r\x1b[2Kcampaign: 3/6 done, 0 failed, about "), "{tty:?}");
    assert!(tty.contains("\r\x1b[2Kcampaign: 6/6 done, 0 failed\r"), "{tty:?}");
    assert!(tty.contains("6 of 6 reissued, 0 failed"), "{tty:?}");
    for (n, old) in all.iter().zip(&before) {
        assert_eq!(env.reissues(n), 1, "{n}");
        assert_ne!(&env.serial(n), old, "{n}");
    }

    // Not on a terminal: plain lines, one per certificate, and the progress at the end; a
    // pattern selects by name.
    // (`run --renew-now` is the same as `--renew-now`.)
    let out = env
        .run_ok(&["run", "--renew-now", "--match", "c1.*", "--match", "c?.example.com"])
        .await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains('\r') && !text.contains('\x1b'), "{text:?}");
    assert!(text.contains("campaign: 6/6 done, 0 failed"), "{text}");
    for n in &all {
        assert!(text.contains(&format!("{n}: deployed serial")), "{text}");
        assert_eq!(env.reissues(n), 2, "{n}");
    }
    let out = env.run(&["--renew-now", "--match", "*.example.net"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no installed certificate is matching *.example.net"),
        "{}",
        stderr(&out)
    );
    // Issued before a date to come: all of them; before one long past: none.
    let out = env
        .run(&["--renew-now", "--all", "--issued-before", "2001-01-01"], &[])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(all.iter().all(|n| env.reissues(n) == 2));
    let out = env
        .run(&["--renew-now", "--all", "--issued-before", "yesterday"], &[])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--issued-before: 'yesterday' is not a date"),
        "{}",
        stderr(&out)
    );
}

/// Killed twice in the middle (with several orders in flight), then run again: every
/// certificate is reissued exactly once, and `status` shows the campaign meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_killed_twice_reissues_every_certificate_exactly_once() {
    let env = TestEnv::start("campaign-kill").await;
    let all = names(20);
    config(&env, &all);
    env.run_ok(&["run", "--once"]).await;
    kill_at(&env, &["--renew-now", "--all"], "installed").await;
    let status = env.run_ok(&["status"]).await;
    let shown = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        shown.contains("in progress since") && shown.contains("(every certificate)"),
        "{shown}"
    );
    let json = env.run_ok(&["status", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["campaign"]["total"], 20, "{report}");
    kill_at(&env, &["--renew-now", "--all"], "job_done").await;
    let mut tries = 0;
    let last = loop {
        let out = env.run(&["--renew-now", "--all"], &[]).await;
        match out.status.code() {
            Some(0) => break String::from_utf8_lossy(&out.stdout).into_owned(),
            // A reissue killed with its answer unread waits for the reconciliation grace.
            Some(6) if tries < 20 => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => panic!("exit {other:?}: {}", stderr(&out)),
        }
    };
    assert!(last.contains("going on with it"), "{last}");
    for n in &all {
        assert_eq!(env.reissues(n), 1, "{n}: {:?}", env.sim.control().ledger());
        env.assert_installed(n);
    }
    assert_eq!(
        all.iter().map(|n| env.paid(n)).sum::<usize>(),
        20,
        "a campaign buys nothing"
    );
    let json = env.run_ok(&["status", "--json"]).await;
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(report["campaign"].is_null(), "{report}");
    assert!(env.dir.join("state/campaign-last.json").exists());
}

/// A running daemon takes the campaign: the command records it, hands it over and follows its
/// progress to the summary. A campaign left by a killed run is taken up by a daemon at its start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_daemon_takes_up_a_campaign_and_one_left_by_a_killed_run() {
    let env = TestEnv::start("campaign-daemon").await;
    let all = names(8);
    config(&env, &all);
    env.run_ok(&["run", "--once"]).await;
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 20, || env.dir.join("state/control.sock").exists()).await;
    let out = env.run_ok(&["--renew-now", "--all"]).await;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("8 of 8 reissued, 0 failed"), "{text}\n{}", daemon.log());
    assert!(all.iter().all(|n| env.reissues(n) == 1));
    daemon.stop();

    kill_at(&env, &["--renew-now", "--all"], "accepted").await;
    let daemon = Daemon::start(&env);
    wait_until(&daemon, 60, || !env.dir.join("state/campaign.json").exists()).await;
    for n in &all {
        assert_eq!(env.reissues(n), 2, "{n}: {:?}", env.sim.control().ledger());
        env.assert_installed(n);
    }
    assert!(daemon.stop().contains("campaign"));
}
