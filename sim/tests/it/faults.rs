use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn only(api: &Api, route: &str, kind: &str) {
    let (code, body) = api
        .sim_post(
            "/faults",
            json!({"rate_limit": 0, "routes": {route: 1.0}, "kinds": [kind]}),
        )
        .await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_transport_and_body_fault_misbehaves_as_named() {
    let api = start().await;
    only(&api, "GET /hello", "status500").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(
        (a.status, &a.body["status"]["code"], &a.body["status"]["type"]),
        (500, &json!("E0500"), &json!("ERROR"))
    );
    assert_schema("JsonResponseData", &a.body);
    only(&api, "GET /hello", "status503").await;
    assert_eq!(
        api.call(Method::GET, "/hello", None).await.body["status"]["code"],
        "E0503"
    );
    // status429 answers as the rate limit does: no Retry-After (none is documented), unless
    // rate_limit_answer asks for it.
    only(&api, "GET /hello", "status429").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(
        (a.status, &a.body["status"]["code"], a.headers.get("retry-after")),
        (429, &json!("E0429"), None)
    );
    api.sim_post(
        "/faults",
        json!({"rate_limit": 0, "routes": {"GET /hello": 1.0}, "kinds": ["status429"], "rate_limit_answer": "429_retry_after"}),
    )
    .await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(
        (
            a.status,
            a.headers.get("retry-after").map(|v| v.to_str().unwrap().to_string())
        ),
        (429, Some("1".into()))
    );
    only(&api, "GET /hello", "status502").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(a.status, 502);
    assert!(a.body.as_str().unwrap().contains("Bad Gateway"));
    only(&api, "GET /hello", "html").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(a.status, 200);
    assert!(a.body.as_str().unwrap().starts_with("<!DOCTYPE html>"));
    only(&api, "GET /hello", "truncated").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert!(
        a.status == 200 && a.body.is_string(),
        "truncated JSON must not parse: {}",
        a.body
    );
    only(&api, "GET /hello", "wrong_shape").await;
    let a = api.call(Method::GET, "/hello", None).await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_object() && !a.body["data"].is_array(), "{}", a.body);
    only(&api, "GET /hello", "reset").await;
    let e = api
        .try_call(Method::GET, "/hello", None)
        .await
        .err()
        .expect("a reset answers nothing");
    assert!(!e.is_timeout(), "{e}");
    only(&api, "GET /hello", "hang").await;
    let e = api
        .try_call(Method::GET, "/hello", None)
        .await
        .err()
        .expect("a hang answers nothing");
    assert!(e.is_timeout(), "{e}");
    // Other routes are untouched; the request log names each fault (the hang's entry is
    // written when the hang ends).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(api.call(Method::GET, "/poll", None).await.status, 200);
    let log = api.sim_get("/requests").await;
    let faults: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["fault"].as_str())
        .collect();
    for k in [
        "status500",
        "status503",
        "status429",
        "status502",
        "html",
        "truncated",
        "wrong_shape",
        "reset",
        "hang",
    ] {
        assert!(faults.contains(&k), "{k} missing from {faults:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ghost_commit_takes_effect_and_loses_the_answer() {
    let api = start().await;
    let contact = api.contact().await;
    let csr = csr(&["ghost.example.com"]);
    let p = api.prepare(&csr).await;
    only(&api, "POST /certificate", "ghost").await;
    let body = create_body("ghost.example.com", &csr, contact, &dns_line(&p.body), true);
    let lost = api
        .raw(
            Method::POST,
            "/certificate",
            Some(body),
            &[("user-agent", "t"), ("x-domainrobot-ctid", "ghost-1")],
            Some(("demo", "demo-password")),
            Some(4),
        )
        .await;
    assert!(lost.is_err(), "a ghost commit must not answer");
    let ledger = api.sim_get("/ledger").await;
    assert_eq!(ledger[0]["ctid"], "ghost-1", "{ledger}");
    // The job is found by its object, but, as in every real sample, it carries no ctid; with
    // job_event_ctid the spec's events[] name it.
    let search = json!({"filters": [{"key": "object", "value": "ghost.example.com"}]});
    // The job may end between the two searches and then shows in both, as on the real service,
    // where the lists are asked one after the other; it is one job, by its id.
    let mut jobs: Vec<Value> = Vec::new();
    for path in ["/job/_search", "/job/history/_search"] {
        let a = api.call(Method::POST, path, Some(search.clone())).await;
        for j in a.body["data"].as_array().cloned().unwrap_or_default() {
            if !jobs.iter().any(|k| k["job"]["id"] == j["job"]["id"]) {
                jobs.push(j);
            }
        }
    }
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0]["job"];
    assert!(
        job.get("events").is_none() && !job.to_string().contains("ghost-1"),
        "{job}"
    );
    api.sim_post(
        "/faults",
        json!({"rate_limit": 0, "job_event_ctid": true, "finished_jobs_stay": true}),
    )
    .await;
    let a = api.call(Method::POST, "/job/_search", Some(search)).await;
    assert_eq!(a.body["data"][0]["job"]["events"][0]["ctid"], "ghost-1", "{}", a.body);
}

/// Sends `n` quick requests to `/hello` from `api`'s client and counts the 429s; every 429 is
/// the error envelope, with a Retry-After exactly when `retry_after`.
async fn limited(api: &Api, n: usize, retry_after: bool) -> usize {
    let mut limited = 0;
    for _ in 0..n {
        let a = api.call(Method::GET, "/hello", None).await;
        if a.status == 429 {
            limited += 1;
            assert_eq!(a.body["status"]["code"], "E0429");
            assert_schema("JsonResponseData", &a.body);
            assert_eq!(a.headers.get("retry-after").is_some(), retry_after, "{:?}", a.headers);
        }
    }
    limited
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_is_per_client_ip_and_answers_429_without_retry_after() {
    let api = start().await;
    api.sim_post("/faults", json!({"rate_limit": 3})).await;
    let n = limited(&api, 10, false).await;
    assert!((6..=7).contains(&n), "10 quick requests at 3/s: {n} limited");
    assert!(api.sim_get("/stats").await["rate_limited"].as_u64().unwrap() >= 6);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.call(Method::GET, "/hello", None).await.status, 200);

    // Per IP, not per account: another account from the same address shares the budget.
    let two = start_with(autodns_sim::SimConfig {
        accounts: vec![
            autodns_sim::Account::demo(),
            autodns_sim::Account {
                user: "other".into(),
                password: "pw".into(),
                context: 9,
            },
        ],
        ..autodns_sim::SimConfig::default()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(two.call(Method::GET, "/hello", None).await.status, 200);
    }
    let other = two
        .raw(
            Method::GET,
            "/hello",
            None,
            &[("user-agent", "t")],
            Some(("other", "pw")),
            Some(9),
        )
        .await
        .unwrap();
    assert_eq!(other.status, 429, "{}", other.body);
    // Unauthenticated requests count too: the limit comes before everything else.
    let anon = two.raw(Method::GET, "/hello", None, &[], None, None).await.unwrap();
    assert_eq!(anon.status, 429, "{}", anon.body);

    // The earlier, kinder form names a Retry-After.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.sim_post(
        "/faults",
        json!({"rate_limit": 3, "rate_limit_answer": "429_retry_after"}),
    )
    .await;
    let n = limited(&api, 10, true).await;
    assert!((6..=7).contains(&n), "{n} limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delay_answer_holds_requests_until_they_fit_the_limit() {
    let api = start().await;
    api.sim_post("/faults", json!({"rate_limit": 4, "rate_limit_answer": "delay"}))
        .await;
    let started = std::time::Instant::now();
    for _ in 0..8 {
        assert_eq!(api.call(Method::GET, "/hello", None).await.status, 200);
    }
    // A burst of 4 at once, then one every 250 ms: about a second for 8.
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "8 requests at 4/s took {took:?}");
    assert!(api.sim_get("/stats").await["rate_delayed"].as_u64().unwrap() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_outcomes_and_poll_anomalies_are_controlled() {
    let api = start().await;
    let contact = api.contact().await;
    api.sim_post("/faults", json!({"rate_limit": 0, "job_outcome": "fail"}))
        .await;
    let (job, _) = api.order(&["fail.example.com"], contact, true, "f1").await;
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "FAILED");
    assert!(m["messages"][0]["text"].as_str().unwrap().contains("rejected"), "{m}");
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;

    api.sim_post("/faults", json!({"rate_limit": 0, "job_outcome": "stuck"}))
        .await;
    let (job, _) = api.order(&["stuck.example.com"], contact, true, "s1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (
            &j.body["data"][0]["job"]["status"],
            &j.body["data"][0]["job"]["subStatus"]
        ),
        (&json!("RUNNING"), &json!("WF_DNS_AUTH"))
    );
    let (code, _) = api
        .sim_post(
            &format!("/jobs/{job}"),
            json!({"action": "fail", "reason": "operator says no"}),
        )
        .await;
    assert_eq!(code, 200);
    let m = api.wait_poll(job).await;
    assert_eq!(
        (&m["job"]["status"], &m["messages"][0]["text"]),
        (&json!("FAILED"), &json!("operator says no"))
    );
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
    assert_eq!(api.sim_post("/jobs/1", json!({"action": "complete"})).await.0, 404);

    api.sim_post(
        "/faults",
        json!({"rate_limit": 0, "duplicate_poll": true, "foreign_poll": true}),
    )
    .await;
    let (job, _) = api.order(&["dup.example.com"], contact, true, "d1").await;
    for _ in 0..100 {
        if api.call(Method::GET, &format!("/job/{job}"), None).await.body["data"][0]["job"]["status"] == "SUCCESS" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let p = api.call(Method::GET, "/poll", None).await;
        let m = p.body["data"][0].clone();
        seen.push((
            m["job"]["id"].as_i64().unwrap(),
            m["ctid"].as_str().unwrap_or("").to_string(),
        ));
        api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
    }
    assert_ne!(seen[0].0, job, "the foreign message comes first");
    assert!(seen[0].1.starts_with("foreign-"));
    assert_eq!((seen[1].0, seen[2].0), (job, job), "our message twice: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_mutations_spoil_the_certificate_and_reset_forgets_everything() {
    let api = start().await;
    let contact = api.contact().await;
    api.sim_post("/faults", json!({"rate_limit": 0, "mutation": "chain_out_of_order"}))
        .await;
    let (job, _) = api.order(&["mut.example.com"], contact, true, "m1").await;
    let m = api.wait_poll(job).await;
    let id = m["object"]["data"]["id"].as_i64().unwrap();
    let c = api.call(Method::GET, &format!("/certificate/{id}"), None).await;
    let types: Vec<&str> = c.body["data"][0]["certificationAuthority"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["caType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["ROOT", "INTERMEDIATE"]);
    // Fault settings are validated.
    let (code, body) = api.sim_post("/faults", json!({"rate": 2.0})).await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = api.sim_post("/faults", json!({"routes": {"GET /nothing": 0.5}})).await;
    assert!(
        code == 400 && body["error"].as_str().unwrap().contains("unknown route"),
        "{body}"
    );
    let (code, _) = api.sim_post("/reset", json!({})).await;
    assert_eq!(code, 200);
    assert!(api.sim_get("/ledger").await.as_array().unwrap().is_empty());
    assert_eq!(
        api.call(Method::GET, &format!("/certificate/{id}"), None).await.status,
        404
    );
    let ca = api
        .http
        .get(format!("{}/ca", api.sim.sim_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ca, api.sim.ca_pem);
    assert_eq!(std::fs::read_to_string(&api.sim.ca_file).unwrap(), api.sim.ca_pem);
}

/// Orders one certificate under `mutation` and returns the delivered leaf and chain types, with
/// the CSR's public key.
async fn delivered(api: &Api, contact: i64, name: &str, mutation: Option<&str>) -> (Vec<u8>, Vec<String>, Vec<u8>) {
    let (code, body) = api
        .sim_post("/faults", json!({"rate_limit": 0, "mutation": mutation}))
        .await;
    assert_eq!(code, 200, "{body}");
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string(), format!("alt.{name}")]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    let csr: String = params.serialize_request(&key).unwrap().pem().unwrap().lines().collect();
    let p = api.prepare(&csr).await;
    let a = api
        .call(
            Method::POST,
            "/certificate",
            Some(create_body(name, &csr, contact, &dns_line(&p.body), true)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = api.wait_poll(a.body["data"][0]["id"].as_i64().unwrap()).await;
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
    let c = api
        .call(
            Method::GET,
            &format!("/certificate/{}", m["object"]["data"]["id"]),
            None,
        )
        .await
        .body["data"][0]
        .clone();
    let leaf = ::pem::parse(c["server"].as_str().unwrap()).unwrap().into_contents();
    let types = c["certificationAuthority"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["caType"].as_str().unwrap().to_string())
        .collect();
    (leaf, types, rcgen::PublicKeyData::subject_public_key_info(&key))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivery_mutation_spoils_the_certificate_as_named() {
    use x509_parser::prelude::*;
    let api = start().await;
    let contact = api.contact().await;
    let now = ::time::OffsetDateTime::now_utc();
    for (i, mutation) in [
        "none",
        "wrong_key",
        "missing_san",
        "expired",
        "not_yet_valid",
        "chain_out_of_order",
        "missing_intermediate",
    ]
    .iter()
    .enumerate()
    {
        let name = format!("m{i}.example.com");
        let (leaf, types, spki) = delivered(&api, contact, &name, Some(*mutation).filter(|m| *m != "none")).await;
        let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
        let same_key = cert.public_key().raw == spki.as_slice();
        let sans = cert
            .subject_alternative_name()
            .unwrap()
            .map(|s| s.value.general_names.len())
            .unwrap_or(0);
        let nb = cert.validity().not_before.to_datetime();
        let na = cert.validity().not_after.to_datetime();
        let valid_now = nb <= now && now < na;
        match *mutation {
            "none" => assert!(same_key && sans == 2 && valid_now && types == ["INTERMEDIATE", "ROOT"]),
            "wrong_key" => assert!(!same_key && sans == 2 && valid_now),
            "missing_san" => assert!(same_key && sans == 1),
            "expired" => assert!(same_key && na < now),
            "not_yet_valid" => assert!(same_key && nb > now),
            "chain_out_of_order" => assert_eq!(types, ["ROOT", "INTERMEDIATE"]),
            "missing_intermediate" => assert_eq!(types, ["ROOT"]),
            _ => unreachable!(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_rate_fails_a_seeded_share_of_requests_on_every_route() {
    let api = start().await;
    api.sim_post("/faults", json!({"rate_limit": 0, "rate": 1.0, "kinds": ["status503"]}))
        .await;
    for path in ["/hello", "/poll", "/certificate/1"] {
        assert_eq!(api.call(Method::GET, path, None).await.status, 503, "{path}");
    }
    api.sim_post("/faults", json!({"rate_limit": 0, "rate": 0.5, "kinds": ["status500"]}))
        .await;
    let mut failed = 0;
    for _ in 0..60 {
        if api.call(Method::GET, "/hello", None).await.status == 500 {
            failed += 1;
        }
    }
    assert!((15..=45).contains(&failed), "{failed} of 60 failed at rate 0.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_its_settings_from_flags_and_the_environment() {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_autodns-sim"))
        .args([
            "--plain-http",
            "--account",
            "ops:s3cret:7",
            "--zone",
            "example.test",
            "--fault-rate",
            "1",
            "--month",
            "10s",
            "--rate-limit-answer",
            "delay",
            "--foreign-poll",
            "--foreign-poll-hold",
            "2s",
            "--dcv-form",
            "no_name",
            "--ca-list",
            "one",
            "--created-precision",
            "day",
        ])
        .env("AUTODNS_SIM_PAYABLE", "true")
        .env("AUTODNS_SIM_FAULTS", r#"{"kinds": ["status503"], "rate_limit": 0}"#)
        .env("AUTODNS_SIM_MUTATION", "expired")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = child.stderr.take().unwrap();
    let log = tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut log, &mut text).await;
        text
    });
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let ready: serde_json::Value = serde_json::from_str(
        &tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    let api = ready["api"].as_str().unwrap().to_string();
    assert!(api.starts_with("http://127.0.0.1:"), "{ready}");
    assert_eq!(ready["pid"].as_u64(), child.id().map(u64::from));
    let http = reqwest::Client::new();
    let hello = |user: &'static str, pw: &'static str, ctx: &'static str| {
        http.get(format!("{api}/hello"))
            .basic_auth(user, Some(pw))
            .header("X-Domainrobot-Context", ctx)
            .header("user-agent", "t")
            .send()
    };
    // The flag's account works (and every request fails with the environment's fault kind);
    // the default demo account does not exist.
    assert_eq!(hello("ops", "s3cret", "7").await.unwrap().status().as_u16(), 503);
    assert_eq!(
        hello("demo", "demo-password", "4").await.unwrap().status().as_u16(),
        401
    );
    let faults: serde_json::Value = http
        .get(ready["sim"].as_str().unwrap().to_string() + "/faults")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            &faults["rate"],
            &faults["kinds"],
            &faults["mutation"],
            &faults["rate_limit"]
        ),
        (&json!(1.0), &json!(["status503"]), &json!("expired"), &json!(0.0))
    );
    assert_eq!(
        [
            &faults["rate_limit_answer"],
            &faults["foreign_poll"],
            &faults["foreign_poll_hold"],
            &faults["dcv_form"],
            &faults["ca_list"],
            &faults["created_precision"],
            &faults["payable"],
            &faults["finished_jobs_stay"]
        ],
        [
            &json!("delay"),
            &json!(true),
            &json!("2s"),
            &json!("no_name"),
            &json!("one"),
            &json!("day"),
            &json!(true),
            &json!(false)
        ]
    );
    // SIGTERM, by PID: a clean exit.
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    // Its log, redirected to a file or a pipe, is plain text: no colour codes.
    let log = log.await.unwrap();
    assert!(log.contains("INFO"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in a redirected log: {log:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_dcv_line_replaces_the_one_prepare_order_answers() {
    let api = start().await;
    let plain = csr(&["h.example.com"]);
    let honest = dns_line(&api.prepare(&plain).await.body);
    assert!(honest.starts_with("h.example.com.\t300\tIN\tTXT\t\""), "{honest}");
    let (status, _) = api
        .sim_post(
            "/faults",
            json!({"rate_limit": 0.0, "dcv_line": "$INCLUDE /etc/passwd {name}. {token}"}),
        )
        .await;
    assert_eq!(status, 200);
    let p = api.prepare(&plain).await;
    assert_schema("JsonResponseDataCertificateData", &p.body);
    let hostile = dns_line(&p.body);
    assert!(hostile.starts_with("$INCLUDE /etc/passwd h.example.com. "), "{hostile}");
    assert_ne!(hostile, honest);
}
