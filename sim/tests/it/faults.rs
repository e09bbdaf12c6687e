use std::time::Duration;

use reqwest::Method;
use serde_json::json;

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
    only(&api, "GET /hello", "status429").await;
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
        .raw(
            Method::GET,
            "/hello",
            None,
            &[("user-agent", "t")],
            Some(("demo", "demo-password")),
            Some(4),
        )
        .await
        .err()
        .expect("a reset answers nothing");
    assert!(!e.is_timeout(), "{e}");
    only(&api, "GET /hello", "hang").await;
    let e = api
        .raw(
            Method::GET,
            "/hello",
            None,
            &[("user-agent", "t")],
            Some(("demo", "demo-password")),
            Some(4),
        )
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
    let p = api
        .call(
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": csr, "product": "QUICKSSLPREMIUM"})),
        )
        .await;
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
    let jobs = api
        .call(
            Method::POST,
            "/job/_search",
            Some(json!({"filters": [{"key": "object", "value": "ghost.example.com"}]})),
        )
        .await;
    assert_eq!(jobs.body["data"][0]["job"]["events"][0]["ctid"], "ghost-1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limit_answers_429_with_retry_after() {
    let api = start().await;
    api.sim_post("/faults", json!({"rate_limit": 3})).await;
    let mut limited = 0;
    for _ in 0..10 {
        let a = api.call(Method::GET, "/hello", None).await;
        if a.status == 429 {
            limited += 1;
            assert_eq!(a.body["status"]["code"], "E0429");
            assert!(a.headers.get("retry-after").is_some());
        }
    }
    assert!(
        (6..=7).contains(&limited),
        "10 quick requests at 3/s: {limited} limited"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.call(Method::GET, "/hello", None).await.status, 200);
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
