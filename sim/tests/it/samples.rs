//! Every real JSON sample in `shared/autodns/real/` against the simulator's own answer to the
//! same request: the sample's shape must be the simulator's.
//!
//! For each sample answer (`response`, `result-wrapper`, `error-httpNNN`, `TRUNCATED`) the test
//! drives the simulator to the same situation on the route the file name starts with
//! (`METHOD_route__source_year.kind.json`), replaying the sample's request where there is one
//! (its CSR, contacts and DNS line swapped for real ones), and checks:
//!
//! - the HTTP status (200, or the one in `error-httpNNN`);
//! - every field of the sample, recursively through objects and array elements, is in the
//!   simulator's answer with the same JSON type (string, number, bool, object, array, null),
//!   except the few in [`EXCEPTIONS`], each with its reason;
//! - every field the simulator adds beyond the sample is a property of the spec's definition at
//!   that place (`JsonResponseData`, `ResponseStatus`, `Message`, `ResponseObject`, `PollMessage`,
//!   `Job`, `ObjectJob`, `Certificate`, `CertificateData`, `CertAuthentication`, `SslContact`, ...,
//!   following the spec's `$ref`s; `ResponseObject.data` is read as a `Certificate`).
//!
//! Files that are not answers of a route the simulator serves are in [`SKIPPED`], with the
//! reason; a new file that is in neither list fails the test until it is mapped.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Sample files not compared, and why. (XML files are not read at all: the simulator serves
/// the JSON API only.)
const SKIPPED: &[(&str, &str)] = &[
    (
        "ANY_envelope__help-json-api-basics_2018.response.json",
        "the 2018 'JSON API Basics' page shows the old envelope (status.resultCode) with its data edited to {}; every other sample, and the spec, use status.code",
    ),
    (
        "GET_poll__js-sdk-docs_2021.result-wrapper.json",
        "a poll message about a Domain job (object.type Domain, registry data); the simulator sells certificates only",
    ),
    (
        "POST_certificate_realtime__dart-sdk-test_2020.response.json",
        "POST /certificate/_realtime (4001012) is not served: the simulator has asynchronous orders only",
    ),
    (
        "POST_zone_name_stream__domainrobot-api-issue9_2021.error-http400.json",
        "the zone API (POST /zone/{name}/_stream) is not served: the simulator publishes records through its own DNS server",
    ),
    (
        "POST_zone_name_stream__lego-fixture_2025.error-http400.json",
        "the zone API (POST /zone/{name}/_stream) is not served: the simulator publishes records through its own DNS server",
    ),
];

/// Fields of a sample the simulator's answer lacks on purpose: `(file name prefix, path, why)`.
/// A path names objects' keys joined by `.`, array elements as `[]`.
const EXCEPTIONS: &[(&str, &str, &str)] = &[
    (
        "GET_job_id__help-certificate-job-info_2021",
        "data[].object.data.technicalContact.extensions",
        "the organisation-validation data of a contact (joiCountryName, companyNumber, ...); the simulator's contacts carry none, as it sells no OV or EV product",
    ),
    (
        "GET_certificate_id__js-sdk-mock-document-signing_2022",
        "data[].extension",
        "the EV/organisation extension of a GLOBALSIGN_DOCUMENT_SIGNING certificate, a product the simulator does not sell",
    ),
];

/// Where the realtime order's 400 is compared instead: the simulator's answer to the same
/// mistake (an empty authentication method) on `POST /certificate`, since `_realtime` is not
/// served; the error's shape is the API's, not the route's.
const REALTIME_ERROR: &str = "POST_certificate_realtime__dart-sdk-test_2020.error-http400.json";

struct Sample {
    file: String,
    /// `METHOD_route`, e.g. `PUT_certificate_id_renew`.
    route: String,
    /// `source_year`, e.g. `help-order-quickssl_2018`.
    source: String,
    /// `response`, `request`, `request-model`, `result-wrapper`, `error-http404`, with
    /// `.TRUNCATED` kept.
    kind: String,
    body: Value,
}

impl Sample {
    fn is_request(&self) -> bool {
        self.kind.starts_with("request")
    }

    /// The HTTP status the sample was answered with.
    fn http(&self) -> u16 {
        match self.kind.strip_prefix("error-http") {
            Some(code) => code[..3].parse().unwrap(),
            None => self
                .body
                .get("status")
                .and_then(Value::as_u64)
                .map_or(200, |s| s as u16),
        }
    }

    /// The API envelope: the body, or the inner object of an SDK wrapper (`result` or `data`).
    fn envelope(&self) -> &Value {
        if self.kind.starts_with("result-wrapper") {
            self.body
                .get("result")
                .or_else(|| self.body.get("data"))
                .expect("a wrapper holds the envelope in result or data")
        } else {
            &self.body
        }
    }
}

fn samples(dir: &std::path::Path) -> Vec<Sample> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for path in files {
        let file = path.file_name().unwrap().to_string_lossy().to_string();
        let (route, rest) = file
            .split_once("__")
            .unwrap_or_else(|| panic!("{file}: not METHOD_route__source.kind.json"));
        let rest = rest.strip_suffix(".json").unwrap();
        let (source, kind) = rest.split_once('.').unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        out.push(Sample {
            file: file.clone(),
            route: route.into(),
            source: source.into(),
            kind: kind.into(),
            body,
        });
    }
    out
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The spec's definitions and how to walk them.
struct Spec<'a> {
    defs: &'a serde_json::Map<String, Value>,
}

impl Spec<'_> {
    fn has(&self, def: &str, key: &str) -> bool {
        self.defs[def]["properties"].get(key).is_some()
    }

    /// The definition of property `key` of `def`, or of its elements for an array.
    fn child(&self, def: &str, key: &str) -> Option<String> {
        if def == "ResponseObject" && key == "data" {
            return Some("Certificate".into());
        }
        let p = self.defs.get(def)?.get("properties")?.get(key)?;
        let r = p.get("$ref").or_else(|| p.get("items").and_then(|i| i.get("$ref")))?;
        let name = r.as_str()?.strip_prefix("#/definitions/")?;
        // Enums and other definitions without properties are leaves.
        self.defs.get(name)?.get("properties").map(|_| name.to_string())
    }
}

/// One comparison of a sample with the simulator's answer: the file, the definition of the
/// envelope's `data[]`, and the differences found.
struct Walk<'a> {
    spec: &'a Spec<'a>,
    file: &'a str,
    data_def: &'a str,
    out: Vec<String>,
}

impl Walk<'_> {
    fn excepted(&self, path: &str) -> bool {
        EXCEPTIONS
            .iter()
            .any(|(f, q, _)| self.file.starts_with(f) && *q == path)
    }

    /// Compares `sample` with `sim` at `path`, whose spec definition is `def`.
    fn compare(&mut self, sample: &Value, sim: &Value, def: Option<&str>, path: &str) {
        let file = self.file;
        if self.excepted(path) {
            return;
        }
        if type_of(sample) != type_of(sim) {
            self.out.push(format!(
                "{file}: {path} is {} in the sample, {} in the simulator's answer",
                type_of(sample),
                type_of(sim)
            ));
            return;
        }
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        let child = |k: &str| -> Option<String> {
            match (path.is_empty(), k) {
                (true, "data") => Some(self.data_def.to_string()),
                _ => def.and_then(|d| self.spec.child(d, k)),
            }
        };
        match (sample, sim) {
            (Value::Object(s), Value::Object(m)) => {
                for (k, sv) in s {
                    let p = join(k);
                    if self.excepted(&p) {
                        continue;
                    }
                    match m.get(k) {
                        None => self
                            .out
                            .push(format!("{file}: the simulator's answer lacks {p} ({sv})")),
                        Some(mv) => {
                            let d = child(k);
                            self.compare(sv, mv, d.as_deref(), &p)
                        }
                    }
                }
                for k in m.keys().filter(|k| !s.contains_key(*k)) {
                    match def {
                        Some(d) if self.spec.has(d, k) => {}
                        Some(d) => self.out.push(format!(
                            "{file}: the simulator adds {}, which the spec's {d} does not define",
                            join(k)
                        )),
                        None => self.out.push(format!(
                            "{file}: the simulator adds {} where no spec definition applies",
                            join(k)
                        )),
                    }
                }
            }
            (Value::Array(s), Value::Array(m)) => {
                let p = format!("{path}[]");
                for (i, sv) in s.iter().enumerate() {
                    // An element's counterpart: the one of the same method or caType, else the
                    // one at the same place, else the first.
                    let same = |key: &str| sv.get(key).and_then(|v| m.iter().find(|e| e.get(key) == Some(v)));
                    let counterpart = same("method").or_else(|| same("caType")).or(m.get(i)).or(m.first());
                    match counterpart {
                        Some(mv) => self.compare(sv, mv, def, &p),
                        None => self.out.push(format!("{file}: {p} is empty in the simulator's answer")),
                    }
                }
            }
            _ => {}
        }
    }
}

/// The differences between a sample envelope and the simulator's, `data[]` being `data_def`s.
fn differences(spec: &Spec<'_>, file: &str, sample: &Value, sim: &Value, data_def: &str) -> Vec<String> {
    let mut walk = Walk {
        spec,
        file,
        data_def,
        out: Vec::new(),
    };
    walk.compare(sample, sim, Some("JsonResponseData"), "");
    walk.out
}

/// The simulator(s) the samples are replayed against, with what the scenarios share.
struct World {
    api: Api,
    /// A simulator whose order term is short, for the renew sample.
    short: Api,
    contact: i64,
    /// An issued DNS-validated certificate for example.com, and an EMAIL-validated one.
    dns_cert: i64,
    email_cert: i64,
    /// The sample requests, by `route__source`.
    requests: BTreeMap<String, Value>,
}

/// A full contact, from the sample request if there is one.
fn contact_body(requests: &BTreeMap<String, Value>) -> Value {
    requests
        .get("POST_sslcontact__help-order-quickssl_2018")
        .cloned()
        .unwrap_or_else(|| json!({"fname": "John", "lname": "Doe", "email": "john.doe@example.com", "phone": "+49-123-12345", "fax": "+49-123-12345", "title": "Admin", "organization": "Company", "address": "123 Main Street", "pcode": "12345", "city": "Anytown", "country": "DE", "state": "BY"}))
}

/// A CSR for `name` with every subject field prepareOrder reports, on one line.
fn full_csr(name: &str) -> String {
    let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
    use rcgen::DnType::*;
    csr_with(
        &key,
        &[name],
        &[
            (CountryName, "DE"),
            (StateOrProvinceName, "BY"),
            (LocalityName, "Regensburg"),
            (OrganizationName, "Company GmbH"),
            (OrganizationalUnitName, "Entwicklung"),
        ],
    )
    .lines()
    .collect()
}

/// A sample order body with real values: the CSR, the contacts and the DNS line.
fn real_order(mut body: Value, csr: &str, contact: i64, dns: Option<&str>) -> Value {
    for key in ["csr", "plain"] {
        if body.get(key).is_some() {
            body[key] = json!(csr);
        }
    }
    // The PHP SDK's model has no contacts (its test mocks the answer); the API needs them.
    body["adminContact"] = json!({"id": contact});
    body["technicalContact"] = json!({"id": contact});
    if let Some(line) = dns
        && body["authentication"]["dns"].is_string()
    {
        body["authentication"]["dns"] = json!(line);
    }
    body
}

impl World {
    async fn new(requests: BTreeMap<String, Value>) -> Self {
        let api = start().await;
        let contact = api
            .call(Method::POST, "/sslcontact", Some(contact_body(&requests)))
            .await;
        assert_eq!(contact.status, 200, "{}", contact.body);
        let contact = contact.body["data"][0]["id"].as_i64().unwrap();
        let (job, _) = api.order(&["example.com"], contact, true, "setup-dns").await;
        let dns_cert = api.wait_job(job, "SUCCESS").await["object"]["data"]["id"]
            .as_i64()
            .unwrap();
        let csr = csr(&["example.com"]);
        let email = json!({"adminContact": {"id": contact}, "technicalContact": {"id": contact}, "name": "example.com",
            "lifetime": {"unit": "MONTH", "period": 12}, "software": "APACHESSL", "csr": csr, "product": "QUICKSSLPREMIUM",
            "authentication": {"method": "EMAIL", "approverEmails": ["admin@example.com"]}});
        let a = api.call(Method::POST, "/certificate", Some(email)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        let job = a.body["data"][0]["id"].as_i64().unwrap();
        let (status, _) = api
            .sim_post(&format!("/jobs/{job}"), json!({"action": "approve"}))
            .await;
        assert_eq!(status, 200, "the approval mail is answered");
        let email_cert = api.wait_job(job, "SUCCESS").await["object"]["data"]["id"]
            .as_i64()
            .unwrap();
        let short = start_with(autodns_sim::SimConfig {
            durations: autodns_sim::Durations {
                month: Duration::from_millis(60),
                cert_validity: Duration::from_millis(500),
                dcv_interval: Duration::from_millis(20),
                ..Default::default()
            },
            faults: autodns_sim::Faults {
                rate_limit: 0.0,
                ..Default::default()
            },
            ..Default::default()
        })
        .await;
        Self {
            api,
            short,
            contact,
            dns_cert,
            email_cert,
            requests,
        }
    }

    async fn knobs(&self, knobs: Value) {
        let mut all = json!({"rate_limit": 0});
        all.as_object_mut().unwrap().extend(knobs.as_object().unwrap().clone());
        assert_eq!(self.api.sim_post("/faults", all).await.0, 200);
    }

    /// A DNS line prepareOrder answers for `name` (and `product`).
    async fn dns_for(&self, api: &Api, name: &str, product: &str) -> String {
        let p = api
            .call(
                Method::POST,
                "/certificate/_prepareOrder",
                Some(json!({"plain": csr(&[name]), "product": product})),
            )
            .await;
        dns_line(&p.body)
    }

    /// The simulator's answer in the situation of `sample`, with the definition of its
    /// `data[]`.
    async fn answer(&self, s: &Sample) -> (Answer, &'static str) {
        let api = &self.api;
        let request = self.requests.get(&format!("{}__{}", s.route, s.source)).cloned();
        let ctid = s.envelope()["ctid"].as_str().unwrap_or("samples").to_string();
        match s.route.as_str() {
            "ANY_search" => {
                let q = json!({"filters": [{"key": "sld2", "value": "example"}]});
                (api.call(Method::POST, "/job/_search", Some(q)).await, "ObjectJob")
            }
            "GET_contact_id" => (api.call(Method::GET, "/sslcontact/987654", None).await, "SslContact"),
            "GET_certificate_id" => {
                // The 2022 mock shows payable, multiyear and reissueRequired: the payable knob.
                if s.source.ends_with("2022") {
                    self.knobs(json!({"payable": true})).await;
                }
                let a = api
                    .call(Method::GET, &format!("/certificate/{}", self.dns_cert), None)
                    .await;
                self.knobs(json!({})).await;
                (a, "Certificate")
            }
            "GET_job_id" => {
                // A BASIC_SSL job waiting for its record, as in the sample.
                let (job, _) = api
                    .order_product("BASIC_SSL", &["jobinfo.example.org"], self.contact, false, &ctid)
                    .await;
                api.wait_job(job, "DEFERRED").await;
                (api.call(Method::GET, &format!("/job/{job}"), None).await, "ObjectJob")
            }
            "GET_poll" => {
                let (job, _) = api.order(&["example.com"], self.contact, true, &ctid).await;
                let m = api.wait_poll(job).await;
                let a = api.call(Method::GET, "/poll", None).await;
                api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
                (a, "PollMessage")
            }
            "PUT_poll_id" => {
                let (job, _) = api.order(&["example.com"], self.contact, true, &ctid).await;
                let m = api.wait_poll(job).await;
                (api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await, "Job")
            }
            "POST_certificate_realtime" => {
                assert_eq!(
                    s.file, REALTIME_ERROR,
                    "the realtime answer is skipped, its error is not"
                );
                let csr = csr(&["domain.de"]);
                let mut body = create_body("domain.de", &csr, self.contact, "", false);
                body["authentication"] = json!({"method": ""});
                (api.call(Method::POST, "/certificate", Some(body)).await, "Certificate")
            }
            "POST_certificate" => {
                let request = request.expect("every create answer has its request");
                let name = request["name"].as_str().unwrap().to_string();
                let product = request["product"].as_str().unwrap().to_string();
                let dns = self.dns_for(api, &name, &product).await;
                let file = request["authentication"]["method"] == "FILE";
                let body = real_order(request, &csr(&[&name]), self.contact, Some(&dns));
                let a = api.call_ctid(Method::POST, "/certificate", Some(body), &ctid).await;
                let job = a.body["data"][0]["id"].as_i64().unwrap_or_else(|| panic!("{}", a.body));
                // A FILE order (the PHP SDK's model names no content) waits for a file nobody
                // serves here; the others issue.
                api.wait_job(job, if file { "DEFERRED" } else { "SUCCESS" }).await;
                (a, "Job")
            }
            "POST_certificate_prepareOrder" => {
                let product = s.envelope()["data"][0]["product"].as_str().unwrap().to_string();
                let name = s.envelope()["data"][0]["name"].as_str().unwrap().to_string();
                let mut body = request.unwrap_or_else(|| json!({"product": product}));
                body["plain"] = json!(full_csr(&name));
                let a = api
                    .call_ctid(Method::POST, "/certificate/_prepareOrder", Some(body), &ctid)
                    .await;
                (a, "CertificateData")
            }
            "POST_job_search" => {
                // A job still running (jobs that ended are in the history only).
                let (job, _) = api
                    .order_product("RAPID_SSL", &["domain.example.net"], self.contact, false, &ctid)
                    .await;
                api.wait_job(job, "DEFERRED").await;
                let q = request.unwrap_or_else(|| json!({}));
                (api.call(Method::POST, "/job/_search", Some(q)).await, "ObjectJob")
            }
            "POST_sslcontact" => {
                let body = request.unwrap_or_else(|| contact_body(&self.requests));
                (api.call(Method::POST, "/sslcontact", Some(body)).await, "SslContact")
            }
            "POST_sslcontact_search" => (
                api.call(Method::POST, "/sslcontact/_search", Some(json!({}))).await,
                "SslContact",
            ),
            "PUT_certificate_id" => {
                let request = request.expect("every reissue answer has its request");
                let email = request["authentication"]["method"] == "EMAIL";
                let id = if email { self.email_cert } else { self.dns_cert };
                let dns = self.dns_for(api, "example.com", "QUICKSSLPREMIUM").await;
                // The 2019 page sends the CSR as multi-line PEM; so does this replay.
                let csr = if request["csr"].as_str().is_some_and(|c| c.contains('\n')) {
                    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
                    csr_with(&key, &["example.com"], &[])
                } else {
                    csr(&["example.com"])
                };
                let body = real_order(request, &csr, self.contact, Some(&dns));
                let a = api
                    .call_ctid(Method::PUT, &format!("/certificate/{id}"), Some(body), &ctid)
                    .await;
                if let Some(job) = a.body["data"][0]["id"].as_i64() {
                    if email {
                        let (status, _) = api
                            .sim_post(&format!("/jobs/{job}"), json!({"action": "approve"}))
                            .await;
                        assert_eq!(status, 200, "the approval mail is answered");
                    }
                    api.wait_job(job, "SUCCESS").await;
                }
                (a, "Job")
            }
            "PUT_certificate_id_renew" => {
                let short = &self.short;
                let contact = short.contact().await;
                let (job, _) = short.order(&["example.com"], contact, true, "setup-renew").await;
                let cert = short.wait_job(job, "SUCCESS").await["object"]["data"]["id"]
                    .as_i64()
                    .unwrap();
                // The renewal window opens 3 (short) months before the term's end.
                tokio::time::sleep(Duration::from_millis(600)).await;
                let body = request.unwrap_or_else(|| json!({}));
                let a = short
                    .call_ctid(Method::PUT, &format!("/certificate/{cert}/_renew"), Some(body), &ctid)
                    .await;
                (a, "Job")
            }
            other => panic!("{}: no scenario for the route {other}", s.file),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_sample_has_the_shape_of_the_simulators_answer() {
    let Some(dir) = shared("autodns/real") else { return };
    let Some(spec) = spec() else { return };
    let spec = Spec {
        defs: spec["definitions"].as_object().unwrap(),
    };
    let all = samples(&dir);
    let requests: BTreeMap<String, Value> = all
        .iter()
        .filter(|s| s.is_request())
        .map(|s| (format!("{}__{}", s.route, s.source), s.body.clone()))
        .collect();
    let world = World::new(requests.clone()).await;
    let mut problems = Vec::new();
    let mut compared = Vec::new();
    let mut replayed = 0;
    for s in &all {
        if s.is_request() {
            // Replayed by the scenario of its answer (checked below).
            let answered = all
                .iter()
                .any(|a| !a.is_request() && a.route == s.route && a.source == s.source);
            assert!(answered, "{}: a request without its answer", s.file);
            replayed += 1;
            continue;
        }
        if SKIPPED.iter().any(|(f, _)| *f == s.file) {
            continue;
        }
        let (a, data_def) = world.answer(s).await;
        if a.status != s.http() {
            problems.push(format!(
                "{}: HTTP {} in the sample, {} from the simulator: {}",
                s.file,
                s.http(),
                a.status,
                a.body
            ));
            continue;
        }
        let found = differences(&spec, &s.file, s.envelope(), &a.body, data_def);
        if !found.is_empty() {
            problems.extend(found);
            problems.push(format!("{}: the simulator answered {}", s.file, a.body));
        }
        compared.push(s.file.clone());
    }
    for (f, _) in SKIPPED {
        assert!(
            all.iter().any(|s| &s.file == f),
            "{f} is skipped but not in the samples"
        );
    }
    for (f, p, _) in EXCEPTIONS {
        assert!(
            compared.iter().any(|c| c.starts_with(f)),
            "the exception {f} {p} names no compared sample"
        );
    }
    assert!(
        problems.is_empty(),
        "{} difference(s) between the real samples and the simulator:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert!(
        compared.len() >= 20,
        "only {} samples compared: {compared:?}",
        compared.len()
    );
    assert!(replayed >= 8, "only {replayed} sample requests replayed");
}

/// The comparison itself fails on a renamed or retyped field, on a missing array element, and
/// on an added field the spec does not define.
#[test]
fn the_comparison_fails_on_a_renamed_retyped_or_invented_field() {
    let Some(spec) = spec() else { return };
    let spec = Spec {
        defs: spec["definitions"].as_object().unwrap(),
    };
    let sample = json!({"stid": "s", "status": {"code": "S0", "type": "SUCCESS"},
        "data": [{"job": {"id": 1, "status": "RUNNING"}, "object": {"type": "Certificate", "value": "a", "data": {"id": 5}}}]});
    let run = |sim: Value| differences(&spec, "x", &sample, &sim, "ObjectJob");
    assert!(run(sample.clone()).is_empty());
    let mut renamed = sample.clone();
    renamed["data"][0]["job"] = json!({"jobId": 1, "status": "RUNNING"});
    assert!(run(renamed).iter().any(|p| p.contains("lacks data[].job.id")));
    let mut retyped = sample.clone();
    retyped["data"][0]["job"]["id"] = json!("1");
    assert!(run(retyped).iter().any(|p| p.contains("data[].job.id is number")));
    let mut added = sample.clone();
    added["data"][0]["job"]["ctidx"] = json!("c");
    added["data"][0]["object"]["data"]["partnerOrderId"] = json!("IX-CC-5");
    let out = run(added);
    assert!(out.iter().any(|p| p.contains("adds data[].job.ctidx")), "{out:?}");
    assert!(!out.iter().any(|p| p.contains("partnerOrderId")), "{out:?}");
    let mut empty = sample.clone();
    empty["data"] = json!([]);
    assert!(run(empty).iter().any(|p| p.contains("data[] is empty")));
}
