//! Helpers for the simulator's tests: a client that speaks to a running simulator, CSRs, and
//! the spec's JSON-schema check.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use autodns_sim::{Durations, Faults, RunningSim, Sim, SimConfig};
use reqwest::Method;
use serde_json::{Value, json};

pub struct Api {
    pub sim: RunningSim,
    pub http: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn start() -> Api {
    start_with(SimConfig {
        durations: Durations {
            dcv_interval: Duration::from_millis(30),
            hang: Duration::from_secs(3),
            ..Durations::default()
        },
        faults: Faults {
            rate_limit: 0.0,
            ..Faults::default()
        },
        ..SimConfig::default()
    })
    .await
}

pub async fn start_with(config: SimConfig) -> Api {
    let sim = Sim::start(config).await.unwrap();
    let root = reqwest::Certificate::from_pem(sim.ca_pem.as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([root])
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    Api { sim, http }
}

impl Api {
    /// An authenticated request as the demo account, with a User-Agent and optional ctid.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.try_call(method, path, body).await.unwrap()
    }

    /// `call`, for answers that may not come (transport faults).
    pub async fn try_call(&self, method: Method, path: &str, body: Option<Value>) -> Result<Answer, reqwest::Error> {
        self.raw(
            method,
            path,
            body,
            &[("user-agent", "sim-tests/1")],
            Some(("demo", "demo-password")),
            Some(4),
        )
        .await
    }

    pub async fn call_ctid(&self, method: Method, path: &str, body: Option<Value>, ctid: &str) -> Answer {
        self.raw(
            method,
            path,
            body,
            &[("user-agent", "sim-tests/1"), ("x-domainrobot-ctid", ctid)],
            Some(("demo", "demo-password")),
            Some(4),
        )
        .await
        .unwrap()
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
        auth: Option<(&str, &str)>,
        context: Option<i32>,
    ) -> Result<Answer, reqwest::Error> {
        let url = format!("{}{}", self.sim.api_url, path);
        let mut req = self.http.request(method, url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some((u, p)) = auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(c) = context {
            req = req.header("X-Domainrobot-Context", c.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, headers, body })
    }

    pub async fn sim_get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{}", self.sim.sim_url(), path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn sim_post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}{}", self.sim.sim_url(), path))
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    pub async fn contact(&self) -> i64 {
        let a = self
            .call(
                Method::POST,
                "/sslcontact",
                Some(
                    json!({"fname": "John", "lname": "Doe", "email": "john.doe@example.com", "phone": "+49-123-12345"}),
                ),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        a.body["data"][0]["id"].as_i64().unwrap()
    }

    /// prepareOrder (QUICKSSLPREMIUM, a new order) for a CSR.
    pub async fn prepare(&self, csr: &str) -> Answer {
        self.call(
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": csr, "product": "QUICKSSLPREMIUM"})),
        )
        .await
    }

    /// prepareOrder then create for `names`; returns (job id, the DNS line used).
    pub async fn order(&self, names: &[&str], contact: i64, provisioning: bool, ctid: &str) -> (i64, String) {
        let csr = csr(names);
        let prep = self.prepare(&csr).await;
        assert_eq!(prep.status, 200, "{}", prep.body);
        let dns = dns_line(&prep.body);
        let a = self
            .call_ctid(
                Method::POST,
                "/certificate",
                Some(create_body(names[0], &csr, contact, &dns, provisioning)),
                ctid,
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        (a.body["data"][0]["id"].as_i64().unwrap(), dns)
    }

    /// A request as another account (`user`, `password`, `context`), with a User-Agent.
    pub async fn call_as(&self, who: (&str, &str, i32), method: Method, path: &str, body: Option<Value>) -> Answer {
        self.raw(
            method,
            path,
            body,
            &[("user-agent", "sim-tests/1")],
            Some((who.0, who.1)),
            Some(who.2),
        )
        .await
        .unwrap()
    }

    /// prepareOrder then create of `product` for `names` with DNS validation; returns (job id,
    /// the DNS line used).
    pub async fn order_product(
        &self,
        product: &str,
        names: &[&str],
        contact: i64,
        provisioning: bool,
        ctid: &str,
    ) -> (i64, String) {
        let csr = csr(names);
        let prep = self
            .call(
                Method::POST,
                "/certificate/_prepareOrder",
                Some(json!({"plain": csr, "product": product})),
            )
            .await;
        assert_eq!(prep.status, 200, "{}", prep.body);
        let dns = dns_line(&prep.body);
        let mut body = create_body(names[0], &csr, contact, &dns, provisioning);
        body["product"] = json!(product);
        let a = self.call_ctid(Method::POST, "/certificate", Some(body), ctid).await;
        assert_eq!(a.status, 200, "{}", a.body);
        (a.body["data"][0]["id"].as_i64().unwrap(), dns)
    }

    /// The job as `GET /job/{id}` or, once it has ended, `GET /job/history/{id}` answers it.
    pub async fn job(&self, job: i64) -> Value {
        for path in [format!("/job/{job}"), format!("/job/history/{job}")] {
            let a = self.call(Method::GET, &path, None).await;
            if a.status == 200 {
                return a.body["data"][0].clone();
            }
        }
        panic!("job {job} is neither running nor in the history");
    }

    /// Waits until job `job` has `status` (without the poll queue); returns the ObjectJob.
    pub async fn wait_job(&self, job: i64, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            last = self.job(job).await;
            if last["job"]["status"] == status {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        panic!("job {job} never became {status}: {last}");
    }

    /// Waits for the poll message about `job`, returns it (unconfirmed).
    pub async fn wait_poll(&self, job: i64) -> Value {
        for _ in 0..200 {
            let a = self.call(Method::GET, "/poll", None).await;
            if let Some(m) = a.body["data"].as_array().and_then(|d| d.first()) {
                if m["job"]["id"].as_i64() == Some(job) {
                    return m.clone();
                }
                let id = m["id"].as_i64().unwrap();
                self.call(Method::PUT, &format!("/poll/{id}"), None).await;
                continue;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        panic!("no poll message for job {job}");
    }
}

pub fn create_body(name: &str, csr: &str, contact: i64, dns: &str, provisioning: bool) -> Value {
    json!({
        "adminContact": {"id": contact}, "technicalContact": {"id": contact},
        "name": name, "lifetime": {"unit": "MONTH", "period": 12}, "software": "APACHESSL",
        "csr": csr, "product": "QUICKSSLPREMIUM",
        "authentication": {"method": "DNS", "dns": dns, "provisioning": provisioning}
    })
}

pub fn dns_line(prep: &Value) -> String {
    prep["data"][0]["authentication"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["method"] == "DNS")
        .unwrap()["dns"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A CSR for `names` (the first is the CN) with `key` and further subject fields, as PEM.
pub fn csr_with(key: &rcgen::KeyPair, names: &[&str], subject: &[(rcgen::DnType, &str)]) -> String {
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    for (t, v) in subject {
        params.distinguished_name.push(t.clone(), *v);
    }
    params.serialize_request(key).unwrap().pem().unwrap()
}

/// A CSR on one line, as the docs ask, for `names` (the first is the CN).
pub fn csr(names: &[&str]) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, names[0]);
    params.serialize_request(&key).unwrap().pem().unwrap().lines().collect()
}

/// The variable that makes a missing `shared/` a failure instead of a skip (.ci/run sets it).
pub const REQUIRE_SHARED: &str = "CERTKEEPER_REQUIRE_SHARED";

/// `rel` inside the project's `shared/` folder beside the checkout (the official spec, the help
/// pages, the real samples): the one way tests reach it. Without it, says once per test binary
/// that the tests needing it are skipped and why, and returns None; with `REQUIRE_SHARED` set,
/// its absence fails the test instead.
pub fn shared(rel: &str) -> Option<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    let path = root.join(rel);
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: the checks against the official spec and the InterNetX help pages are skipped (put the project's shared/ folder beside the checkout to run them)",
        path.display()
    );
    assert!(
        std::env::var_os(REQUIRE_SHARED).is_none(),
        "{why}, and {REQUIRE_SHARED} is set"
    );
    static SAID: OnceLock<()> = OnceLock::new();
    // Straight to stderr, past the test harness's capture, so that a skip is seen.
    SAID.get_or_init(|| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "{why}");
    });
    None
}

/// The official spec, from `shared/` beside the checkout, if it is there.
pub fn spec() -> Option<&'static Value> {
    static SPEC: OnceLock<Option<Value>> = OnceLock::new();
    SPEC.get_or_init(|| {
        let path = shared("autodns/domainrobot.json")?;
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("the official spec cannot be read at {}: {e}", path.display()));
        Some(serde_json::from_str(&text).unwrap())
    })
    .as_ref()
}

/// Validates `body` against the spec's definition `def`, with every object closed
/// (`additionalProperties: false`) so that a misspelt field fails too. Without the spec (no
/// `shared/`), this check is skipped, as [`shared`] says.
#[track_caller]
pub fn assert_schema(def: &str, body: &Value) {
    let Some(spec) = spec() else { return };
    let mut defs = spec["definitions"].clone();
    for (_, d) in defs.as_object_mut().unwrap().iter_mut() {
        if d.get("properties").is_some() && d.get("additionalProperties").is_none() {
            d["additionalProperties"] = Value::Bool(false);
        }
    }
    // ResponseObject.data is free-form.
    defs["ResponseObject"]["additionalProperties"] = Value::Bool(false);
    // Where the real samples differ from the spec (API_NOTES.md §0): poll messages' jobs carry
    // `type: "ssl"`, and prepareOrder answers the key type (`RSA`, `ECC`) in `algorithm`.
    defs["Job"]["properties"]["type"] = json!({"type": "string"});
    defs["CsrHashAlgorithmConstants"]["enum"]
        .as_array_mut()
        .unwrap()
        .extend([json!("RSA"), json!("ECC")]);
    // The contact create answer echoes an address sent as one string as a string (help page).
    defs["SslContact"]["properties"]["address"] = json!({"type": ["array", "string"], "items": {"type": "string"}});
    let schema = json!({ "$schema": "http://json-schema.org/draft-04/schema#", "definitions": defs, "$ref": format!("#/definitions/{def}") });
    let validator = jsonschema::options()
        .should_validate_formats(false)
        .build(&schema)
        .unwrap();
    let errors: Vec<String> = validator
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{def} does not match the spec:\n{}\n{body:#}",
        errors.join("\n")
    );
}
