//! FILE validation by a real HTTP GET of the file, and EMAIL validation waiting for its approval.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autodns_sim::{Durations, Faults, SimConfig};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// A web server on loopback that serves `/.well-known/pki-validation/fileauth.txt` for one Host
/// with whatever the test puts in `content` (404 while `None`), and records the Host headers.
struct WebRoot {
    addr: SocketAddr,
    content: Arc<Mutex<Option<String>>>,
    hosts: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for WebRoot {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn web_root() -> WebRoot {
    web_root_at("127.0.0.1:0").await.unwrap()
}

/// [`web_root`] listening on `addr`.
async fn web_root_at(addr: &str) -> std::io::Result<WebRoot> {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    type Shared = (Arc<Mutex<Option<String>>>, Arc<Mutex<Vec<String>>>);
    async fn file(State((content, hosts)): State<Shared>, headers: HeaderMap) -> (StatusCode, String) {
        let host = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        hosts.lock().unwrap().push(host);
        match content.lock().unwrap().clone() {
            Some(c) => (StatusCode::OK, c),
            None => (StatusCode::NOT_FOUND, "not found".into()),
        }
    }
    let content = Arc::new(Mutex::new(None));
    let hosts = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new()
        .route("/.well-known/pki-validation/fileauth.txt", axum::routing::get(file))
        .with_state((content.clone(), hosts.clone()));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(WebRoot {
        addr,
        content,
        hosts,
        task,
    })
}

async fn start_checking(file_check_address: Option<SocketAddr>, durations: Durations) -> Api {
    start_with(SimConfig {
        file_check_address,
        durations: Durations {
            dcv_interval: Duration::from_millis(30),
            ..durations
        },
        faults: Faults {
            rate_limit: 0.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
}

fn entries<'a>(prep: &'a Value, method: &str) -> Vec<&'a Value> {
    prep["data"][0]["authentication"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["method"] == method)
        .collect()
}

async fn prepare(api: &Api, csr: &str) -> Value {
    let p = api
        .call(
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": csr, "product": "QUICKSSLPREMIUM"})),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    p.body
}

#[tokio::test]
async fn a_file_order_issues_only_once_the_web_server_serves_the_exact_content() {
    let web = web_root().await;
    let api = start_checking(Some(web.addr), Durations::default()).await;
    let contact = api.contact().await;
    let csr = csr(&["www.example.com"]);
    let prep = prepare(&api, &csr).await;
    let file = entries(&prep, "FILE");
    assert_eq!(file.len(), 1, "{prep}");
    assert_eq!(
        file[0]["fileName"],
        json!("www.example.com/.well-known/pki-validation/fileauth.txt")
    );
    let content = file[0]["fileContent"].as_str().unwrap().to_string();

    // A content prepareOrder never gave is refused, naming the field.
    let mut body = create_body("www.example.com", &csr, contact, "", false);
    body["authentication"] = json!({"method": "FILE", "fileContent": "made-up"});
    let bad = api.call(Method::POST, "/certificate", Some(body.clone())).await;
    assert_eq!(
        (bad.status, &bad.body["messages"][0]["objects"][0]["value"]),
        (400, &json!("authentication.fileContent")),
        "{}",
        bad.body
    );

    body["authentication"] = json!({"method": "FILE", "fileName": file[0]["fileName"], "fileContent": content});
    let a = api.call(Method::POST, "/certificate", Some(body)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    // Not served (404), then served with other bytes: the job waits.
    let waiting = api.wait_job(job, "DEFERRED").await;
    assert_eq!(waiting["job"]["subStatus"], json!("WF_FILE_AUTH"));
    *web.content.lock().unwrap() = Some("something else".into());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api.job(job).await["job"]["status"], json!("DEFERRED"));
    // Served exactly (a trailing newline, as an editor writes it, is accepted): issued.
    *web.content.lock().unwrap() = Some(format!("{content}\n"));
    api.wait_job(job, "SUCCESS").await;
    let hosts = web.hosts.lock().unwrap().clone();
    assert!(
        !hosts.is_empty() && hosts.iter().all(|h| h == "www.example.com"),
        "the GET names the certificate's name as its Host: {hosts:?}"
    );
}

#[tokio::test]
async fn a_file_order_whose_file_is_never_served_fails_after_the_dcv_timeout() {
    let web = web_root().await;
    let api = start_checking(
        Some(web.addr),
        Durations {
            dcv_timeout: Duration::from_millis(400),
            ..Durations::default()
        },
    )
    .await;
    let contact = api.contact().await;
    let csr = csr(&["www.example.com"]);
    let prep = prepare(&api, &csr).await;
    let content = entries(&prep, "FILE")[0]["fileContent"].clone();
    let mut body = create_body("www.example.com", &csr, contact, "", false);
    body["authentication"] = json!({"method": "FILE", "fileContent": content});
    let a = api.call(Method::POST, "/certificate", Some(body)).await;
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    let failed = api.wait_job(job, "FAILED").await;
    let m = api.wait_poll(job).await;
    let text = m.to_string();
    assert!(
        text.contains("answers HTTP 404"),
        "the reason names what was served: {failed} {text}"
    );
}

#[tokio::test]
async fn without_an_address_the_file_is_fetched_from_the_names_a_record_in_the_simulators_dns() {
    // Port 80 of 127.0.0.1, where a CA would ask; needs the right to listen there.
    let web = match web_root_at("127.0.0.1:80").await {
        Ok(w) => w,
        Err(e) => {
            assert!(
                std::env::var_os("CERTKEEPER_REQUIRE_SERVERS").is_none(),
                "cannot listen on 127.0.0.1:80 ({e}); CI runs as root"
            );
            eprintln!("skipped: cannot listen on 127.0.0.1:80 ({e}); CI runs it as root");
            return;
        }
    };
    let api = start_checking(None, Durations::default()).await;
    let contact = api.contact().await;
    let csr = csr(&["files.example.com"]);
    let prep = prepare(&api, &csr).await;
    let content = entries(&prep, "FILE")[0]["fileContent"].as_str().unwrap().to_string();
    *web.content.lock().unwrap() = Some(content.clone());
    let mut body = create_body("files.example.com", &csr, contact, "", false);
    body["authentication"] = json!({"method": "FILE", "fileContent": content});
    let a = api.call(Method::POST, "/certificate", Some(body)).await;
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    // No address for the name yet: the job waits.
    api.wait_job(job, "DEFERRED").await;
    assert!(web.hosts.lock().unwrap().is_empty());
    let (status, _) = api
        .sim_post(
            "/dns",
            json!({"action": "set", "name": "files.example.com", "type": "A", "value": "127.0.0.1"}),
        )
        .await;
    assert_eq!(status, 200);
    api.wait_job(job, "SUCCESS").await;
    assert!(web.hosts.lock().unwrap().iter().any(|h| h == "files.example.com"));
}

#[tokio::test]
async fn an_email_order_names_an_offered_approver_and_waits_for_the_approval() {
    let api = start_checking(
        None,
        Durations {
            dcv_timeout: Duration::from_secs(30),
            ..Durations::default()
        },
    )
    .await;
    let contact = api.contact().await;
    let csr = csr(&["www.example.com"]);
    let prep = prepare(&api, &csr).await;
    let offered = entries(&prep, "EMAIL")[0]["approverEmails"].clone();
    assert_eq!(offered[0], json!("admin@example.com"), "{prep}");
    let mut body = create_body("www.example.com", &csr, contact, "", false);
    for (approvers, field_value) in [
        (json!([]), "authentication.approverEmails"),
        (json!(["jane@elsewhere.org"]), "authentication.approverEmails"),
    ] {
        body["authentication"] = json!({"method": "EMAIL", "approverEmails": approvers});
        let bad = api.call(Method::POST, "/certificate", Some(body.clone())).await;
        assert_eq!(
            (bad.status, &bad.body["messages"][0]["objects"][0]["value"]),
            (400, &json!(field_value)),
            "{}",
            bad.body
        );
    }
    assert!(
        api.sim_get("/ledger").await.as_array().unwrap().is_empty(),
        "nothing was bought"
    );
    body["authentication"] = json!({"method": "EMAIL", "approverEmails": ["webmaster@example.com"]});
    let a = api.call(Method::POST, "/certificate", Some(body)).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = api.job(job).await;
    assert_eq!(
        (&waiting["job"]["status"], &waiting["job"]["subStatus"]),
        (&json!("RUNNING"), &json!("WF_EMAIL_AUTH")),
        "an approval mail waits for its reader"
    );
    // A DNS order's job waits for no approval.
    let (dns_job, _) = api.order(&["dns.example.com"], contact, true, "dns-order").await;
    let (status, _) = api
        .sim_post(&format!("/jobs/{dns_job}"), json!({"action": "approve"}))
        .await;
    assert_eq!(status, 400);
    let (status, _) = api
        .sim_post(&format!("/jobs/{job}"), json!({"action": "approve"}))
        .await;
    assert_eq!(status, 200);
    api.wait_job(job, "SUCCESS").await;
}

#[tokio::test]
async fn an_unanswered_approval_mail_fails_the_job_and_approval_delay_answers_it() {
    let api = start_checking(
        None,
        Durations {
            dcv_timeout: Duration::from_millis(400),
            ..Durations::default()
        },
    )
    .await;
    let contact = api.contact().await;
    let mut body = create_body("www.example.com", &csr(&["www.example.com"]), contact, "", false);
    body["authentication"] = json!({"method": "EMAIL", "approverEmails": ["admin@example.com"]});
    let a = api.call(Method::POST, "/certificate", Some(body.clone())).await;
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    api.wait_job(job, "FAILED").await;
    let m = api.wait_poll(job).await;
    assert!(
        m.to_string()
            .contains("approval mail to admin@example.com was not answered"),
        "{m}"
    );

    let api = start_checking(
        None,
        Durations {
            approval_delay: Some(Duration::from_millis(300)),
            ..Durations::default()
        },
    )
    .await;
    let contact = api.contact().await;
    body["adminContact"] = json!({"id": contact});
    body["technicalContact"] = json!({"id": contact});
    let a = api.call(Method::POST, "/certificate", Some(body)).await;
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    api.wait_job(job, "SUCCESS").await;
}
