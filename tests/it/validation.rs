//! FILE and EMAIL validation against autodns-sim: a hostile or empty FILE answer is refused
//! before anything is written or paid; an EMAIL order names an offered approver, waits for the
//! approval (shown, told once) and is installed once it is given.

use std::time::Duration;

use autodns_sim::{DcvForm, Faults, SimConfig};

use crate::support::*;

fn file_cert(webroot: &std::path::Path) -> String {
    format!(
        "\n[[certificate]]\nname = \"www.example.com\"\nvalidation = \"file\"\nfile_check_address = \"127.0.0.1:9\"\nwebroot = \"{}\"\n",
        webroot.display()
    )
}

/// Every file under `dir`, relative.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                todo.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_name_that_leaves_the_web_root_is_refused_and_nothing_is_written_or_paid() {
    let env = TestEnv::start("file-hostile").await;
    let root = env.dir.join("webroot");
    std::fs::create_dir_all(&root).unwrap();
    let outside = env.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    env.write_config(&[], "");
    env.append_config(&file_cert(&root));
    for hostile in [
        "{name}/.well-known/pki-validation/../../../outside/owned.txt".to_string(),
        format!("{}/owned.txt", outside.display()),
        "{name}/.well-known/pki-validation/sub/owned.txt".to_string(),
        "evil.example.org/.well-known/pki-validation/fileauth.txt".to_string(),
    ] {
        env.set_faults(Faults {
            file_name: Some(hostile.clone()),
            ..Faults::default()
        });
        let out = env.run(&["run", "--once"], &[]).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(3), "{hostile}: {err}");
        assert!(err.contains("fileName"), "the error names the field: {err}");
        assert!(files_under(&root).is_empty(), "{hostile}: {:?}", files_under(&root));
        assert!(
            files_under(&outside).is_empty(),
            "{hostile}: {:?}",
            files_under(&outside)
        );
        assert!(env.sim.control().ledger().is_empty(), "{hostile}: nothing was ordered");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_entry_without_name_and_content_as_in_the_2018_help_page_is_refused_before_paying() {
    let env = TestEnv::start_sim(
        "file-2018",
        SimConfig {
            faults: Faults {
                rate_limit: 0.0,
                dcv_form: DcvForm::DoubleTabNoName,
                ..Faults::default()
            },
            ..SimConfig::default()
        },
    )
    .await;
    let root = env.dir.join("webroot");
    std::fs::create_dir_all(&root).unwrap();
    env.write_config(&[], "");
    env.append_config(&file_cert(&root));
    let out = env.run(&["run", "--once"], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("no fileName and fileContent"), "{err}");
    assert!(files_under(&root).is_empty());
    assert!(env.sim.control().ledger().is_empty());
}

fn email_cert(approver: &str) -> String {
    format!("\n[[certificate]]\nname = \"www.example.com\"\nvalidation = \"email\"\napprover_email = \"{approver}\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approver_that_is_not_offered_is_refused_with_the_list_and_nothing_is_paid() {
    let env = TestEnv::start("email-refused").await;
    env.write_config(&[], "");
    env.append_config(&email_cert("jane@example.com"));
    let out = env.run(&["run", "--once"], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains("approver_email jane@example.com is not offered")
            && err.contains("admin@example.com, administrator@example.com, hostmaster@example.com, webmaster@example.com, postmaster@example.com"),
        "{err}"
    );
    assert!(env.sim.control().ledger().is_empty());
    assert!(
        !env.sim
            .control()
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with("/certificate")),
        "no order was sent"
    );
}

/// With the shipped waits: the run that orders says at once that the approval mail waits (exit
/// 8, `on_failure` told `awaiting_approval`), `status` shows who is to approve; the next run
/// waits, is not told again, and installs the certificate as soon as the mail is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_order_waits_for_its_approval_told_once_and_is_installed_once_approved() {
    let env = TestEnv::start("email").await;
    env.write_config(&[], "");
    env.append_config(&email_cert("webmaster@example.com"));
    let (on_failure, told) = env.recorder("on-failure");
    env.append_config(&format!("[daemon]\non_failure = [\"{}\"]\n", on_failure.display()));
    let started = std::time::Instant::now();
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(9), "{}", stderr(&out));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "told at once, not after the job timeout: {:?}",
        started.elapsed()
    );
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(said.contains("waiting for approval by webmaster@example.com"), "{said}");
    let ledger = env.sim.control().ledger();
    assert_eq!((ledger.len(), ledger[0].charged), (1, true), "{ledger:?}");
    assert_eq!(
        env.sent_order()["authentication"],
        serde_json::json!({"method": "EMAIL", "approverEmails": ["webmaster@example.com"]})
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "awaiting_approval", "{rows}");
    assert_eq!(
        rows[0]["state_text"], "waiting for approval by webmaster@example.com",
        "{rows}"
    );
    let calls = std::fs::read_to_string(&told).unwrap();
    assert!(calls.contains("CERTKEEPER_EVENT=awaiting_approval"), "{calls}");

    // The next run waits; the mail is answered meanwhile.
    let job = ledger[0].job_id;
    let run = {
        let env_dir = env.config_path();
        tokio::spawn(async move {
            tokio::process::Command::new(BIN)
                .args(["run", "--once"])
                .env("CERTKEEPER_CONFIG", env_dir)
                .env_remove("CERTKEEPER_API_PASSWORD")
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(env.sim.control().approve(job), "the job waited for its approval");
    let out = tokio::time::timeout(Duration::from_secs(50), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed("www.example.com");
    assert_eq!(env.paid("www.example.com"), 1);
    let calls = std::fs::read_to_string(&told).unwrap();
    assert_eq!(calls.matches("CERTKEEPER_EVENT=").count(), 1, "told once: {calls}");
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert_eq!(rows[0]["state"], "deployed", "{rows}");
}

/// Two certificates with one web root: one file path, so one order at a time; the other is
/// refused before it writes anything, and nothing is left in the web root afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_sharing_a_web_root_never_replace_each_others_file() {
    let env = TestEnv::start("file-shared").await;
    let root = env.dir.join("webroot");
    std::fs::create_dir_all(&root).unwrap();
    env.write_config(&[], "");
    // Nothing serves the files (port 9): the first order waits for its file until the test
    // config's propagation timeout, holding the path; the second is refused meanwhile.
    for name in ["a.example.com", "b.example.com"] {
        env.append_config(&format!(
            "[[certificate]]\nname = \"{name}\"\nvalidation = \"file\"\nfile_check_address = \"127.0.0.1:9\"\nwebroot = \"{}\"\n",
            root.display()
        ));
    }
    let out = env.run(&["run", "--once"], &[]).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.matches("is in use by the order of").count(), 1, "{err}");
    assert!(err.contains("is not served after"), "{err}");
    assert!(env.sim.control().ledger().is_empty());
    assert!(
        files_under(&root.join(".well-known/pki-validation")).is_empty(),
        "{:?}",
        files_under(&root)
    );
}
