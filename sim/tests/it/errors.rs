use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Checks an error answer: HTTP status, `status {code, text?, type: ERROR}`, the ctid echo, a
/// stid, the first message's code and (when given) the field it names; and the spec's shape.
#[track_caller]
fn check_error(a: &Answer, http: u16, code: &str, message: Option<&str>, field: Option<&str>) {
    assert_eq!(a.status, http, "{}", a.body);
    assert_eq!(a.body["status"]["code"], code, "{}", a.body);
    assert_eq!(a.body["status"]["type"], "ERROR", "{}", a.body);
    assert!(a.body["stid"].as_str().is_some_and(|s| !s.is_empty()), "{}", a.body);
    assert!(a.body.get("data").is_none(), "{}", a.body);
    if let Some(m) = message {
        assert_eq!(a.body["messages"][0]["code"], m, "{}", a.body);
        assert_eq!(a.body["messages"][0]["status"], "ERROR", "{}", a.body);
    }
    if let Some(f) = field {
        assert_eq!(
            a.body["messages"][0]["objects"][0],
            json!({"type": "field", "value": f}),
            "{}",
            a.body
        );
    }
    assert_schema("JsonResponseData", &a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_user_agent_and_routing_errors_use_the_envelope() {
    let api = start().await;
    let ua = [("user-agent", "t/1"), ("x-domainrobot-ctid", "c-1")];
    let none = api.raw(Method::GET, "/hello", None, &ua, None, Some(4)).await.unwrap();
    check_error(&none, 401, "E0101", Some("EF0101"), None);
    assert_eq!(none.body["ctid"], "c-1");
    let wrong = api
        .raw(Method::GET, "/hello", None, &ua, Some(("demo", "nope")), Some(4))
        .await
        .unwrap();
    check_error(&wrong, 401, "E0101", Some("EF0101"), None);
    let ctx = api
        .raw(
            Method::GET,
            "/hello",
            None,
            &ua,
            Some(("demo", "demo-password")),
            Some(1),
        )
        .await
        .unwrap();
    check_error(&ctx, 401, "E0101", Some("EF0101"), None);
    let no_ctx = api
        .raw(Method::GET, "/hello", None, &ua, Some(("demo", "demo-password")), None)
        .await
        .unwrap();
    check_error(&no_ctx, 401, "E0101", Some("EF0101"), None);
    assert!(
        no_ctx.body["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("X-Domainrobot-Context")
    );
    let no_ua = api
        .raw(
            Method::GET,
            "/hello",
            None,
            &[("user-agent", "")],
            Some(("demo", "demo-password")),
            Some(4),
        )
        .await
        .unwrap();
    check_error(&no_ua, 400, "E0000", Some("EF0003"), None);

    check_error(&api.call(Method::GET, "/nowhere", None).await, 404, "E0404", None, None);
    check_error(
        &api.call(Method::PATCH, "/certificate/5", None).await,
        405,
        "E0405",
        None,
        None,
    );
    check_error(
        &api.call(Method::GET, "/certificate/five", None).await,
        400,
        "E0000",
        Some("EF0000"),
        Some("id"),
    );
    check_error(
        &api.call(Method::GET, "/certificate/999", None).await,
        404,
        "E400104",
        Some("EF400104404"),
        None,
    );
    check_error(
        &api.call(Method::GET, "/sslcontact/999", None).await,
        404,
        "E400204",
        None,
        None,
    );
    check_error(
        &api.call(Method::GET, "/job/999", None).await,
        404,
        "E300114",
        None,
        None,
    );
    check_error(
        &api.call(Method::PUT, "/poll/999", None).await,
        404,
        "E0906",
        None,
        None,
    );
    let huge = "x".repeat(2 << 20);
    check_error(
        &api.call(Method::POST, "/sslcontact", Some(json!({"fname": huge})))
            .await,
        413,
        "E0413",
        None,
        None,
    );
    // Accounts do not see each other's objects.
    let api2 = start_with(autodns_sim::SimConfig {
        accounts: vec![
            autodns_sim::Account::demo(),
            autodns_sim::Account {
                user: "other".into(),
                password: "pw".into(),
                context: 4,
            },
        ],
        faults: autodns_sim::Faults {
            rate_limit: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let id = api2.contact().await;
    let other = api2
        .raw(
            Method::GET,
            &format!("/sslcontact/{id}"),
            None,
            &ua,
            Some(("other", "pw")),
            Some(4),
        )
        .await
        .unwrap();
    check_error(&other, 404, "E400204", None, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_naming_the_field() {
    let api = start().await;
    let contact = api.contact().await;
    let good_csr = csr(&["www.example.com"]);
    let prep = |body: Value| {
        let api = &api;
        async move { api.call(Method::POST, "/certificate/_prepareOrder", Some(body)).await }
    };
    check_error(
        &prep(json!({"plain": good_csr})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("product"),
    );
    check_error(
        &prep(json!({"plain": good_csr, "product": "FREESSL"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("product"),
    );
    check_error(
        &prep(json!({"product": "SSL123"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("plain"),
    );
    check_error(
        &prep(json!({"plain": "garbage", "product": "SSL123"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("plain"),
    );
    check_error(
        &prep(json!({"plain": good_csr, "product": 5})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("product"),
    );
    check_error(
        &prep(json!({"plain": good_csr, "product": "SSL123", "businessCase": "GIFT"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("businessCase"),
    );
    let wild = csr(&["*.example.com"]);
    check_error(
        &prep(json!({"plain": wild, "product": "QUICKSSLPREMIUM"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("name"),
    );
    let many = csr(&[
        "a.example.com",
        "b.example.com",
        "c.example.com",
        "d.example.com",
        "e.example.com",
        "f.example.com",
    ]);
    check_error(
        &prep(json!({"plain": many, "product": "QUICKSSLPREMIUM"})).await,
        400,
        "E400110",
        Some("EF400110"),
        Some("subjectAlternativeNames"),
    );
    // A CSR with a broken signature, and a 1024-bit RSA key (made by openssl).
    let mut broken: Vec<char> = good_csr.chars().collect();
    let n = broken.len() - 40;
    broken[n] = if broken[n] == 'A' { 'B' } else { 'A' };
    let broken: String = broken.into_iter().collect();
    let b = prep(json!({"plain": broken, "product": "SSL123"})).await;
    check_error(&b, 400, "E400110", Some("EF400110"), Some("plain"));
    if let Some(weak) = openssl_rsa_csr(1024) {
        let w = prep(json!({"plain": weak, "product": "SSL123"})).await;
        check_error(&w, 400, "E400110", Some("EF400110"), Some("plain"));
        assert!(
            w.body["messages"][0]["text"].as_str().unwrap().contains("2048"),
            "{}",
            w.body
        );
        let ok = prep(json!({"plain": openssl_rsa_csr(2048).unwrap(), "product": "SSL123"})).await;
        assert_eq!(
            (
                ok.status,
                ok.body["data"][0].get("algorithm"),
                &ok.body["data"][0]["keySize"]
            ),
            (200, Some(&json!("RSA")), &json!(2048)),
            "{}",
            ok.body
        );
    }

    let p = prep(json!({"plain": good_csr, "product": "QUICKSSLPREMIUM"})).await;
    let dns = dns_line(&p.body);
    let create = |body: Value| {
        let api = &api;
        async move { api.call(Method::POST, "/certificate", Some(body)).await }
    };
    let base = create_body("www.example.com", &good_csr, contact, &dns, true);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    check_error(
        &create(with(&|b| b["lifetime"]["period"] = json!(36))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("lifetime.period"),
    );
    check_error(
        &create(with(&|b| b["lifetime"]["period"] = json!("twelve"))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("lifetime.period"),
    );
    check_error(
        &create(with(&|b| b["name"] = json!("other.example.com"))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("name"),
    );
    check_error(
        &create(with(&|b| b["software"] = json!("NGINX"))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("software"),
    );
    check_error(
        &create(with(&|b| b["authentication"]["method"] = json!("ORG"))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("authentication.method"),
    );
    check_error(
        &create(with(&|b| {
            b["authentication"]["dns"] = json!("www.example.com. 300 IN TXT \"forged\"")
        }))
        .await,
        400,
        "E400101",
        Some("EF400101"),
        Some("authentication.dns"),
    );
    check_error(
        &create(with(&|b| b["adminContact"]["id"] = json!(4242))).await,
        400,
        "E400101",
        Some("EF4001006"),
        None,
    );
    check_error(
        &create(with(&|b| b["technicalContact"] = Value::Null)).await,
        400,
        "E400101",
        Some("EF4001010"),
        None,
    );
    check_error(
        &create(with(&|b| b["certificateType"] = json!("MAIL"))).await,
        400,
        "E400101",
        Some("EF400101"),
        Some("certificateType"),
    );
    check_error(
        &create(with(&|b| {
            b.as_object_mut().unwrap().remove("csr").map(|_| ()).unwrap_or(())
        }))
        .await,
        400,
        "E400101",
        Some("EF400101"),
        Some("csr"),
    );
    assert!(
        api.sim_get("/ledger").await.as_array().unwrap().is_empty(),
        "a refused order was charged"
    );

    // A reissue while the job still runs is refused; so is a change of product or name.
    api.sim_post("/faults", json!({"rate_limit": 0, "job_outcome": "stuck"}))
        .await;
    let ok = create(base.clone()).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let job = ok.body["data"][0]["id"].as_i64().unwrap();
    let id = api.call(Method::GET, &format!("/job/{job}"), None).await.body["data"][0]["object"]["data"]["id"]
        .as_i64()
        .unwrap();
    let busy = api
        .call(Method::PUT, &format!("/certificate/{id}"), Some(base.clone()))
        .await;
    check_error(&busy, 400, "E400102", Some("EF4001020"), None);
    api.sim_post(&format!("/jobs/{job}"), json!({"action": "complete"}))
        .await;
    check_error(
        &api.call(
            Method::PUT,
            &format!("/certificate/{id}"),
            Some(with(&|b| b["product"] = json!("SSL123"))),
        )
        .await,
        400,
        "E400102",
        Some("EF400102"),
        Some("product"),
    );
    check_error(
        &api.call(
            Method::PUT,
            &format!("/certificate/{id}"),
            Some(with(&|b| b["name"] = json!("example.com"))),
        )
        .await,
        400,
        "E400102",
        Some("EF400102"),
        Some("name"),
    );
}

fn openssl_rsa_csr(bits: u32) -> Option<String> {
    let dir = std::env::temp_dir().join(format!("sim-rsa-{bits}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-new",
            "-newkey",
            &format!("rsa:{bits}"),
            "-nodes",
            "-subj",
            "/CN=www.example.com",
            "-keyout",
        ])
        .arg(dir.join("k.pem"))
        .arg("-out")
        .arg(dir.join("r.pem"))
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipping the {bits}-bit RSA case: openssl cannot be run ({e}); .ci/run installs it");
            return None;
        }
    };
    let csr = std::fs::read_to_string(dir.join("r.pem")).ok();
    let _ = std::fs::remove_dir_all(&dir);
    if !out.status.success() {
        eprintln!(
            "skipping the {bits}-bit RSA case: openssl could not make a CSR: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    csr
}
