//! Orders the account already holds, bought by hand before certkeeper came: adopted and
//! reissued for free where one fits, a choice asked for where it is ambiguous, and a new order
//! only where none runs.

use std::time::Duration;

use certkeeper::api::Client;
use certkeeper::api::wire::{OrderFor, OrderRequest};

use crate::support::*;

/// A month of order term, compressed so that a 12-month term ends within the test.
const MONTH: Duration = Duration::from_secs(4);

/// Buys an order for `names` through the API, as a user would in the SSL Manager, and waits
/// until its certificate is issued; returns its id.
async fn buy_by_hand(env: &TestEnv, client: &Client, names: &[&str], months: u32) -> i64 {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let key = certkeeper::keys::PrivateKey::generate(certkeeper::config::KeyKind::EcdsaP256).unwrap();
    let csr = key.csr(&names).unwrap().single_line();
    let contact: certkeeper::config::ContactDetails = serde_json::from_value(serde_json::json!({
        "fname": "Jo", "lname": "Doe", "email": "jo@example.com", "phone": "+49-941-1234560"
    }))
    .unwrap();
    let contact = client.create_contact(&contact).await.unwrap();
    let what = OrderFor {
        name: names[0].clone(),
        product: "QUICKSSLPREMIUM".into(),
        months,
        software: "APACHESSL".into(),
        csr,
        admin_contact: contact,
        technical_contact: contact,
    };
    let ctid = format!("by-hand-{}-{}", names.join("-"), env.sim.control().ledger().len());
    let turn = client.turn().await;
    client
        .create(
            &OrderRequest::new(None, what, certkeeper::api::wire::OrderAuthentication::dns(None, true)),
            &ctid,
            turn,
        )
        .await
        .unwrap();
    let id = env
        .sim
        .control()
        .ledger()
        .iter()
        .find(|l| l.ctid.as_deref() == Some(ctid.as_str()))
        .map(|l| l.certificate_id)
        .expect("the order is in the ledger");
    for _ in 0..200 {
        if client.certificate(id).await.is_ok_and(|c| c.server.is_some()) {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the order for {names:?} was not issued");
}

fn creates(env: &TestEnv, name: &str) -> usize {
    env.sim
        .control()
        .ledger()
        .iter()
        .filter(|l| l.name == name && l.kind == "create")
        .count()
}

/// Certificates bought beforehand: one order for a; two for b; one for c with an extra name;
/// one for d whose term has ended. `run --once` buys nothing for a (it reissues the order and
/// installs the result), asks for a choice for b and c (buying nothing), and buys d anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_bought_by_hand_are_adopted_and_nothing_is_bought_where_one_fits_or_it_is_unclear() {
    // The term's end as the 2022 answer shows it (payable).
    let env = TestEnv::start_months("adopt", MONTH).await;
    // Searches answer ids and names only, the harsher of the plausible forms: everything else
    // is read by id.
    env.set_faults(autodns_sim::Faults {
        payable: true,
        rate_limit: 0.0,
        search_brief: true,
        ..autodns_sim::Faults::default()
    });
    let api = env.client();
    let d = buy_by_hand(&env, &api, &["d.example.com"], 12).await;
    let ended_at = std::time::Instant::now() + MONTH * 12;
    let a = buy_by_hand(&env, &api, &["a.example.com"], 24).await;
    let b1 = buy_by_hand(&env, &api, &["b.example.com"], 24).await;
    let b2 = buy_by_hand(&env, &api, &["b.example.com"], 24).await;
    let c = buy_by_hand(&env, &api, &["c.example.com", "www.c.example.com"], 24).await;
    assert!(b1 != b2 && a != d && c != a);
    let bought = env.sim.control().ledger().len();

    // d's 12-month term ends; the others run for 24.
    tokio::time::sleep(ended_at.saturating_duration_since(std::time::Instant::now()) + Duration::from_secs(1)).await;
    env.write_config(
        &[
            Cert::autodns("a.example.com"),
            Cert::autodns("b.example.com"),
            Cert::autodns("c.example.com"),
            Cert::autodns("d.example.com"),
        ],
        "",
    );
    // `plan` first: what each would get and what it costs, asking the API with searches and
    // infos only, and writing nothing.
    let before = env.sim.control().requests().len();
    let out = env.run(&["plan", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(7), "d would be bought: {}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["schema_version"], 1, "{plan}");
    let step = |n: &str| -> (String, bool) {
        let c = plan["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap();
        (c["action"].as_str().unwrap().to_string(), c["paid"].as_bool().unwrap())
    };
    assert_eq!(step("a.example.com"), ("adopt".into(), false), "{plan}");
    assert_eq!(step("b.example.com"), ("choose".into(), false), "{plan}");
    assert_eq!(step("c.example.com"), ("choose".into(), false), "{plan}");
    assert_eq!(step("d.example.com"), ("create".into(), true), "{plan}");
    let asked: Vec<String> = env.sim.control().requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(!asked.is_empty());
    assert!(
        asked
            .iter()
            .all(|r| r.ends_with("/certificate/_search") || r.starts_with("GET ") && r.contains("/certificate/")),
        "{asked:?}"
    );
    assert!(!env.dir.join("state").exists(), "plan wrote the state directory");
    let table = env.run(&["plan"], &[]).await;
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(table.contains("d.example.com") && table.contains("PAID"), "{table}");
    // `run --once --dry-run` is the plan, with its exit code; without --once it is refused.
    let dry = env.run(&["run", "--once", "--dry-run"], &[]).await;
    assert_eq!(dry.status.code(), Some(7), "{}", stderr(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("PAID"));
    assert_eq!(env.run(&["run", "--dry-run"], &[]).await.status.code(), Some(2));
    assert!(!env.dir.join("state").exists(), "--dry-run wrote the state directory");
    assert_eq!(env.sim.control().ledger().len(), bought, "plan bought something");

    // `adopt` lists the account beside the configuration, with searches and infos only, and
    // writes nothing.
    let before = env.sim.control().requests().len();
    let out = env.run(&["adopt", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schema_version"], 1, "{report}");
    let account = report["account"].as_array().unwrap();
    let ids: Vec<i64> = account.iter().map(|o| o["id"].as_i64().unwrap()).collect();
    let mut all = vec![a, b1, b2, c, d];
    all.sort();
    assert_eq!(ids, all, "{report}");
    let order = |id: i64| account.iter().find(|o| o["id"] == id).unwrap();
    assert_eq!(order(d)["status"], "term_ended", "{report}");
    assert_eq!(order(a)["status"], "issued", "{report}");
    assert_eq!(order(a)["product"], "QUICKSSLPREMIUM", "{report}");
    assert_eq!(order(a)["configured"], "a.example.com", "{report}");
    assert!(
        order(a)["expires"].is_string() && order(a)["term_end"].is_string(),
        "{report}"
    );
    assert_eq!(
        order(c)["names"],
        serde_json::json!(["c.example.com", "www.c.example.com"]),
        "{report}"
    );
    let binding = |n: &str| {
        report["certificates"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(binding("a.example.com")["action"], "adopt", "{report}");
    assert_eq!(binding("a.example.com")["order"], a, "{report}");
    assert!(
        binding("a.example.com")["why"]
            .as_str()
            .unwrap()
            .contains("free reissue with a new key"),
        "{report}"
    );
    assert_eq!(binding("b.example.com")["action"], "choose", "{report}");
    assert_eq!(binding("c.example.com")["action"], "choose", "{report}");
    assert_eq!(binding("d.example.com")["action"], "create", "{report}");
    let asked: Vec<String> = env.sim.control().requests()[before..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(
        asked
            .iter()
            .all(|r| r.ends_with("/certificate/_search") || r.starts_with("GET ") && r.contains("/certificate/")),
        "{asked:?}"
    );
    assert!(!env.dir.join("state").exists(), "adopt wrote the state directory");
    let table = String::from_utf8_lossy(&env.run_ok(&["adopt"]).await.stdout).into_owned();
    assert!(table.contains("adopt --write"), "{table}");
    assert_eq!(env.sim.control().ledger().len(), bought, "adopt bought something");

    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(8),
        "b and c wait for a choice:\n{}",
        stderr(&out)
    );
    let err = stderr(&out);

    // a: the order bought by hand is reissued for free with certkeeper's key, and installed.
    env.assert_installed("a.example.com");
    assert_eq!(creates(&env, "a.example.com"), 1, "a was bought again");
    assert_eq!(env.reissues("a.example.com"), 1);
    let ledger = env.sim.control().ledger();
    assert!(
        ledger
            .iter()
            .any(|l| l.name == "a.example.com" && l.kind == "reissue" && l.certificate_id == a),
        "{ledger:?}"
    );
    // b and c: nothing bought, and the choice is named with the orders found.
    for (name, ids) in [("b.example.com", vec![b1, b2]), ("c.example.com", vec![c])] {
        assert_eq!(creates(&env, name), ids.len(), "{name} was bought again");
        assert_eq!(env.reissues(name), 0, "{name}");
        assert!(!env.live(name).exists(), "{name}");
        for id in ids {
            assert!(
                err.contains(&format!("order {id} (")),
                "{name}: order {id} not named:\n{err}"
            );
        }
    }
    assert!(err.contains("set certificate_id = N"), "{err}");
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    for row in rows.as_array().unwrap() {
        if row["name"] == "b.example.com" || row["name"] == "c.example.com" {
            assert_eq!(row["state"], "waiting_for_consent", "{row}");
            assert!(row["next"].as_str().unwrap().contains("certificate_id = N"), "{row}");
        }
    }
    assert!(err.contains("other names than the configured c.example.com"), "{err}");
    // d: its only order's term has ended, so a new one is bought.
    assert_eq!(creates(&env, "d.example.com"), 2, "{:?}", env.sim.control().ledger());
    env.assert_installed("d.example.com");
    assert_eq!(
        env.sim.control().ledger().len(),
        bought + 2,
        "one reissue (a), one create (d)"
    );

    // The operator chooses b's second order: it is reissued, nothing bought.
    let config = std::fs::read_to_string(env.config_path()).unwrap().replace(
        "name = \"b.example.com\"\n",
        &format!("name = \"b.example.com\"\ncertificate_id = {b2}\n"),
    );
    std::fs::write(env.config_path(), config).unwrap();
    // (Its failed attempt backs off; the operator who just chose asks for it now.)
    let out = env.run(&["--renew-now", "b.example.com"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed("b.example.com");
    assert_eq!(creates(&env, "b.example.com"), 2);
    assert!(
        env.sim
            .control()
            .ledger()
            .iter()
            .any(|l| l.name == "b.example.com" && l.kind == "reissue" && l.certificate_id == b2)
    );
}

/// `new_orders = "deny"`: a name the account holds no order for is never bought.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_orders_deny_buys_nothing_and_says_what_waits() {
    let env = TestEnv::start("new-orders-deny").await;
    env.write_config(&[Cert::autodns("www.example.com")], "new_orders = \"deny\"");
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(8), "{}", stderr(&out));
    assert!(
        env.sim.control().ledger().is_empty(),
        "{:?}",
        env.sim.control().ledger()
    );
    let rows = status_rows(&env.run_ok(&["status", "--json"]).await);
    assert!(
        rows[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("new_orders = \"deny\" forbids buying one"),
        "{rows}"
    );
}

/// `adopt --write` binds the order that fits in the state directory, in the answers' older form
/// (no `payable`: the term is its creation plus its lifetime) and with brief search answers; the next run reissues it for free
/// without searching the account again. `adopt` without `--write` had written nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_write_binds_the_order_that_fits_and_the_next_run_reissues_it() {
    let env = TestEnv::start("adopt-write").await;
    env.set_faults(autodns_sim::Faults {
        rate_limit: 0.0,
        search_brief: true,
        ..autodns_sim::Faults::default()
    });
    let api = env.client();
    let id = buy_by_hand(&env, &api, &["e.example.com"], 12).await;
    env.write_config(&[Cert::autodns("e.example.com"), Cert::autodns("f.example.com")], "");
    let out = env.run(&["adopt"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !env.dir.join("state").exists(),
        "adopt without --write wrote the state directory"
    );
    let out = env.run(&["adopt", "--write", "--json"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &report["certificates"][0];
    assert_eq!(
        (e["action"].as_str(), e["order"].as_i64(), e["written"].as_bool()),
        (Some("adopt"), Some(id), Some(true)),
        "{report}"
    );
    assert!(
        report["account"][0]["term_end"].is_string(),
        "the term from creation and lifetime: {report}"
    );
    let f = &report["certificates"][1];
    assert_eq!(
        (f["action"].as_str(), f["written"].as_bool()),
        (Some("create"), Some(false)),
        "{report}"
    );
    let store = certkeeper::store::Store::new(&env.dir.join("state"), &env.dir.join("live"), 3);
    assert_eq!(store.load("e.example.com").unwrap().certificate_id, Some(id));
    assert_eq!(store.load("f.example.com").unwrap().certificate_id, None);
    // While another certkeeper holds the state directory, --write writes nothing and says who.
    let held = std::fs::OpenOptions::new()
        .write(true)
        .open(env.dir.join("state/lock"))
        .unwrap();
    held.lock().unwrap();
    let out = env.run(&["adopt", "--write"], &[]).await;
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    assert!(stderr(&out).contains("another certkeeper"), "{}", stderr(&out));
    drop(held);
    // A second --write finds it bound.
    let again: serde_json::Value =
        serde_json::from_slice(&env.run(&["adopt", "--write", "--json"], &[]).await.stdout).unwrap();
    assert_eq!(again["certificates"][0]["action"], "bound", "{again}");

    let before = env.sim.control().requests().len();
    env.write_config(&[Cert::autodns("e.example.com")], "");
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    env.assert_installed("e.example.com");
    assert_eq!(creates(&env, "e.example.com"), 1, "e was bought again");
    assert_eq!(env.reissues("e.example.com"), 1);
    let searched = env.sim.control().requests()[before..]
        .iter()
        .filter(|r| r.path.ends_with("/certificate/_search"))
        .count();
    assert_eq!(searched, 0, "the bound order was searched for again");
}
