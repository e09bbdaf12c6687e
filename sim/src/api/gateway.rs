//! The XML gateway (`POST /gateway`): the `<request><auth>…</auth><task><code>…` envelope of
//! InterNetX's XML API for the SSL tasks the help pages use, over the same state as the JSON API,
//! answered as the pages and `shared/autodns/real/XML_*` show: `<response><result><data>…
//! <status><code><text><type><object>…</result><stid>`, in snake_case elements (`<admin>`,
//! `<first>`, `<postal_code>`, `<certificate_job><job>`), and errors as `<msg>` entries.
//!
//! Tasks: 400201 contact create, 400110 prepareOrder, 400101 create, 400102 reissue, 400104
//! info, 400105 list, 400115 job list (400135 its history), 0905 poll, 0906 poll confirm.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State as AxState};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::xml::{Element, parse};
use crate::shared::Shared;
use crate::state::{ApiError, Reply, RequestEntry};
use crate::wire::{BasicUser, Query};

/// The largest request accepted, as for the JSON API.
const MAX_BODY: usize = super::pipeline::MAX_BODY;

/// `POST /gateway`: one XML request, answered in XML (HTTP 200, errors as `<msg>` entries, as
/// the XML gateway answers them), and logged like a JSON request (passwords redacted).
pub(super) async fn handle(
    AxState(s): AxState<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    body: Bytes,
) -> Response {
    let mut log = RequestEntry {
        method: "POST".into(),
        path: "/gateway".into(),
        query: None,
        body: None,
        ctid: None,
        user: None,
        status: 200,
        fault: None,
        time: crate::time::format(crate::time::now()),
        logged: false,
    };
    let rate = s.lock().faults.rate_limit;
    let answer = if body.len() > MAX_BODY {
        Err(ApiError::new(413, "E00000", "The request is too large."))
    } else if rate > 0.0 && s.rate_limits.take(peer.ip(), rate).is_some() {
        s.lock().stats.rate_limited += 1;
        log.status = 429;
        Err(ApiError::new(429, "E00000", "Too many requests."))
    } else {
        answer(&s, &body, &mut log)
    };
    let stid = s.lock().stid();
    let xml = match answer {
        Ok((task, reply)) => success(&task, reply, &stid),
        Err(e) => failure(&e, &stid),
    };
    s.lock().requests.push(log);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/xml; charset=utf-8")], xml).into_response()
}

fn answer(s: &Shared, body: &[u8], log: &mut RequestEntry) -> Result<(String, Reply), ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::field("0", "request", "the request is not UTF-8"))?;
    let request = parse(text).map_err(|e| ApiError::field("0", "request", e))?;
    if request.name != "request" {
        return Err(ApiError::field("0", "request", "the document is not a <request>"));
    }
    let task = request
        .child("task")
        .ok_or_else(|| ApiError::field("0", "request.task", "the request has no <task>"))?;
    let code = task
        .text_of("code")
        .ok_or_else(|| ApiError::field("0", "request.task.code", "the task has no <code>"))?
        .to_string();
    log.body = Some(json!({ "task": code }));
    let owner = authenticate(s, request.child("auth"))?;
    log.user = Some(owner.user.clone());
    let env = s.env();
    let reply = match code.as_str() {
        "400201" => {
            let c = task.child("contact").ok_or_else(|| missing(&code, "contact"))?;
            s.lock().contact_create(&owner, from(&code, contact_json(c))?)
        }
        "400110" => {
            let c = task
                .child("certificate_request")
                .ok_or_else(|| missing(&code, "certificate_request"))?;
            s.lock().prepare_order(&owner, from(&code, camel(c))?, env)
        }
        "400101" | "400102" => {
            let c = task.child("certificate").ok_or_else(|| missing(&code, "certificate"))?;
            let body = from(&code, certificate_json(c))?;
            let mut st = s.lock();
            let r = if code == "400101" {
                st.create(&owner, body, None, false, env)
            } else {
                let id = id_of(&code, c)?;
                st.reissue(&owner, id, body, None, false, env)
            };
            drop(st);
            s.wake.notify_one();
            r
        }
        "400104" => {
            let c = task.child("certificate").ok_or_else(|| missing(&code, "certificate"))?;
            s.lock().info(&owner, id_of(&code, c)?)
        }
        "400105" => s.lock().search(&owner, &query(&code, task)?),
        "400115" | "400135" => s.lock().job_search(&owner, &query(&code, task)?, code == "400135"),
        "0905" => Ok(s.lock().poll(&owner)),
        "0906" => {
            let m = task.child("message").ok_or_else(|| missing(&code, "message"))?;
            s.lock().poll_confirm(&owner, id_of(&code, m)?)
        }
        // (info and the poll: the contacts in full, below)
        other => Err(ApiError::field(
            other,
            "request.task.code",
            format!("task {other} is not served by the simulator's gateway"),
        )),
    }?;
    let mut reply = reply;
    // The XML answers embed the certificate's contacts in full: their owner, updater and
    // times too (the JSON answers leave those out).
    if matches!(code.as_str(), "400104" | "400105" | "0905")
        && let Some(items) = reply.data.as_mut()
    {
        for item in items.iter_mut() {
            let cert = if code == "0905" {
                item.pointer_mut("/object/data")
            } else {
                Some(item)
            };
            if let Some(cert) = cert {
                full_contacts(s, &owner, cert);
            }
        }
    }
    Ok((code, reply))
}

fn full_contacts(s: &Shared, owner: &BasicUser, cert: &mut Value) {
    for key in ["adminContact", "technicalContact"] {
        let Some(id) = cert.get(key).and_then(|c| c.get("id")).and_then(Value::as_i64) else {
            continue;
        };
        let full = s
            .lock()
            .contact_info(owner, id)
            .ok()
            .and_then(|r| r.data)
            .and_then(|mut d| d.pop());
        if let Some(mut full) = full {
            full["updater"] = full["owner"].clone();
            cert[key] = full;
        }
    }
}

/// `<auth><user><password><context>`: an account of the simulator, else the gateway's error
/// (`EF01000`, naming the value, as the 2024 answer shows).
fn authenticate(s: &Shared, auth: Option<&Element>) -> Result<BasicUser, ApiError> {
    let wrong = |field: &str, value: &str| {
        let mut e = ApiError::new(200, "E00000", "Errors occurred during processing.");
        e.messages.push(crate::wire::Message {
            code: "EF01000".into(),
            text: "Missing or wrong value.".into(),
            status: crate::wire::StatusType::Error,
            objects: vec![crate::wire::GenericObject {
                kind: format!("request.auth.{field}"),
                value: format!("\"{value}\""),
            }],
        });
        e
    };
    let auth = auth.ok_or_else(|| wrong("user", ""))?;
    let user = auth.text_of("user").unwrap_or_default();
    let password = auth.text_of("password").unwrap_or_default();
    let context = auth.text_of("context").unwrap_or_default();
    let Ok(ctx) = context.parse::<i32>() else {
        return Err(wrong("context", context));
    };
    s.accounts
        .iter()
        .find(|a| a.user == user && a.password == password && a.context == ctx)
        .map(|a| BasicUser {
            user: a.user.clone(),
            context: a.context,
        })
        .ok_or_else(|| wrong("password", "(redacted)"))
}

fn missing(task: &str, what: &str) -> ApiError {
    ApiError::field(
        task,
        &format!("request.task.{what}"),
        format!("the task needs <{what}>"),
    )
}

fn id_of(task: &str, el: &Element) -> Result<i64, ApiError> {
    el.text_of("id")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| ApiError::field(task, &format!("{}.id", el.name), "an <id> number is required"))
}

fn from<T: DeserializeOwned>(task: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::field(task, "request.task", e.to_string()))
}

/// `<view><limit><offset>` (and `<children>`) as a JSON `Query`.
fn query(task: &str, t: &Element) -> Result<Query, ApiError> {
    let mut q = json!({});
    if let Some(view) = t.child("view") {
        let mut v = Map::new();
        for key in ["limit", "offset"] {
            if let Some(n) = view.text_of(key) {
                let n: i64 = n
                    .parse()
                    .map_err(|_| ApiError::field(task, &format!("view.{key}"), "must be a number"))?;
                v.insert(key.into(), json!(n));
            }
        }
        q["view"] = Value::Object(v);
    }
    from(task, q)
}

/// An element's children as a JSON object with camelCase keys; leaves are strings, `1`/`0`
/// and `true`/`false` of flags become booleans, a repeated element an array.
fn camel(el: &Element) -> Value {
    let mut map = Map::new();
    for c in &el.children {
        let key = camel_case(&c.name);
        let v = if c.children.is_empty() {
            leaf(&key, &c.text)
        } else {
            camel(c)
        };
        match map.get_mut(&key) {
            Some(Value::Array(list)) => list.push(v),
            Some(first) => {
                let first = first.take();
                map.insert(key, Value::Array(vec![first, v]));
            }
            None => {
                map.insert(key, v);
            }
        }
    }
    Value::Object(map)
}

fn leaf(key: &str, text: &str) -> Value {
    match (key, text) {
        ("provisioning" | "hasCsr", "1" | "true") => Value::Bool(true),
        ("provisioning" | "hasCsr", "0" | "false") => Value::Bool(false),
        ("id", t) => t
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(t.into())),
        (_, t) => Value::String(t.into()),
    }
}

fn camel_case(snake: &str) -> String {
    let mut out = String::new();
    let mut up = false;
    for c in snake.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `<contact>` as the JSON `SslContact`: `first`/`last` are `fname`/`lname`, `postal_code`
/// is `pcode`.
fn contact_json(el: &Element) -> Value {
    let mut v = camel(el);
    if let Value::Object(map) = &mut v {
        for (from, to) in [("first", "fname"), ("last", "lname"), ("postalCode", "pcode")] {
            if let Some(x) = map.remove(from) {
                map.insert(to.into(), x);
            }
        }
    }
    v
}

/// `<certificate>` as the JSON `Certificate`: `<admin>`/`<technical>` are the contacts,
/// `<lifetime>` a number of months, `<approver_email>` the approver of an EMAIL (or S/MIME)
/// order.
fn certificate_json(el: &Element) -> Value {
    let mut v = camel(el);
    if let Value::Object(map) = &mut v {
        for (from, to) in [("admin", "adminContact"), ("technical", "technicalContact")] {
            if let Some(x) = map.remove(from) {
                map.insert(to.into(), x);
            }
        }
        if let Some(Value::String(months)) = map.remove("lifetime") {
            let period = months.parse::<i64>().map(Value::from).unwrap_or(Value::String(months));
            map.insert("lifetime".into(), json!({ "unit": "MONTH", "period": period }));
        }
        if let Some(Value::String(approver)) = map.remove("approverEmail") {
            let auth = map
                .entry("authentication")
                .or_insert_with(|| json!({ "method": "EMAIL" }));
            if let Value::Object(a) = auth {
                a.insert("approverEmails".into(), json!([approver]));
            }
        }
    }
    v
}

/// A successful answer in the XML gateway's shape.
fn success(task: &str, reply: Reply, stid: &str) -> String {
    let mut data = String::new();
    let items = reply.data.unwrap_or_default();
    let object_value = reply.object.as_ref().and_then(|o| o.value.clone());
    let object_type = reply.object.as_ref().map(|o| o.kind.to_ascii_lowercase());
    let mut status_object = object_value
        .clone()
        .map(|v| (object_type.clone().unwrap_or_default(), v));
    match task {
        "400201" => {
            // `<data/>`; the new contact's id is the status object's value.
            let id = items.first().and_then(|c| c.get("id")).map(|v| v.to_string());
            status_object = id.map(|id| ("contact".to_string(), id));
        }
        "400110" => items.iter().for_each(|i| element("certificate_request", i, &mut data)),
        "400101" | "400102" => {
            for i in &items {
                let job = json!({ "job": { "id": i.get("id"), "status": "RUNNING" } });
                element("certificate_job", &job, &mut data);
            }
            status_object = object_value.map(|v| ("certificate".to_string(), v));
        }
        "400104" | "400105" => {
            if task == "400105" {
                data.push_str(&format!("<summary>{}</summary>", items.len()));
            }
            items
                .iter()
                .for_each(|i| element("certificate", &xml_certificate(i.clone()), &mut data));
            if task == "400104" {
                status_object = items
                    .first()
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .map(|n| ("certificate".to_string(), n.to_string()));
            }
        }
        "400115" | "400135" => {
            data.push_str(&format!("<summary>{}</summary>", items.len()));
            for i in &items {
                let mut job = i.get("job").cloned().unwrap_or(Value::Null);
                if let Value::Object(j) = &mut job {
                    j.insert("type".into(), json!("ssl"));
                    j.insert(
                        "object".into(),
                        i.pointer("/object/value").cloned().unwrap_or(Value::Null),
                    );
                }
                element("certificate_job", &json!({ "job": job }), &mut data);
            }
            status_object = None;
        }
        "0905" => {
            let summary = reply.object.as_ref().and_then(|o| o.summary).unwrap_or(0);
            data.push_str(&format!("<summary>{summary}</summary>"));
            items
                .iter()
                .for_each(|i| element("message", &xml_message(i), &mut data));
            status_object = object_value
                .filter(|v| !v.is_empty())
                .map(|v| ("message".to_string(), v));
        }
        "0906" => {
            data.push_str("<summary>0</summary>");
            let id = object_value.clone().unwrap_or_default();
            element("message", &json!({ "id": id }), &mut data);
            status_object = object_value.map(|v| ("message".to_string(), v));
        }
        _ => {}
    }
    let data = if data.is_empty() {
        "<data/>".to_string()
    } else {
        format!("<data>{data}</data>")
    };
    let object = status_object
        .map(|(t, v)| format!("<object><type>{}</type><value>{}</value></object>", esc(&t), esc(&v)))
        .unwrap_or_default();
    let kind = format!("{:?}", reply.kind).to_ascii_lowercase();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><result>{data}<status><code>{}</code><text>{}</text><type>{kind}</type>{object}</status></result><stid>{}</stid></response>",
        esc(&reply.code),
        esc(&reply.text),
        esc(stid)
    )
}

/// A certificate as the XML info shows it: `<lifetime>` the months, `<sha>`, `<extension/>`.
fn xml_certificate(mut v: Value) -> Value {
    if let Value::Object(map) = &mut v {
        if let Some(period) = map.get("lifetime").and_then(|l| l.get("period")).cloned() {
            map.insert("lifetime".into(), period);
        }
        let sha = map.get("signatureHashAlgorithm").cloned().unwrap_or(json!("SHA2"));
        map.insert("sha".into(), sha);
        map.entry("extension").or_insert_with(|| json!({}));
        // An S/MIME order's approver is its mailbox (the spec's JSON Certificate has no such
        // field; the XML page's info answer shows it).
        if map.get("certificateType").and_then(Value::as_str) == Some("MAIL")
            && let Some(name) = map.get("name").cloned()
        {
            map.insert("approverEmail".into(), name);
        }
    }
    v
}

/// A poll message as the XML pages show one about a certificate job: `<job>` holds the
/// `<certificate>`, the `<job_id>` and the job's `<status>` (`S400101` for a create that
/// succeeded, `E400102` for a reissue that failed, ...) about the object `ssl`.
fn xml_message(m: &Value) -> Value {
    let job = m.get("job");
    let action = job.and_then(|j| j.get("action")).and_then(Value::as_str).unwrap_or("");
    let task = match action {
        "reissue" => "400102",
        "renew" => "400106",
        "revoke" => "4001031",
        "delete" => "400103",
        _ => "400101",
    };
    let ok = job.and_then(|j| j.get("status")).and_then(Value::as_str) == Some("SUCCESS");
    let mut out = json!({
        "id": m.get("id"),
        "owner": m.get("owner"),
        "job": {
            "certificate": m.pointer("/object/data"),
            "jobId": job.and_then(|j| j.get("id")),
            "status": {
                "code": format!("{}{task}", if ok { "S" } else { "E" }),
                "type": if ok { "success" } else { "error" },
                "object": { "type": "ssl", "value": m.pointer("/object/value") },
            },
            "stid": m.get("stid"),
        },
        "created": m.get("created"),
    });
    if let Some(c) = out.pointer_mut("/job/certificate") {
        *c = xml_certificate(c.take());
    }
    out
}

/// An error in the XML gateway's shape: each message a `<msg>`, then the status.
fn failure(e: &ApiError, stid: &str) -> String {
    let mut msgs = String::new();
    for m in &e.messages {
        let object = m
            .objects
            .first()
            .map(|o| {
                format!(
                    "<object><type>{}</type><value>{}</value></object>",
                    esc(&o.kind),
                    esc(&o.value)
                )
            })
            .unwrap_or_default();
        msgs.push_str(&format!(
            "<msg><text>{}</text><code>{}</code><type>error</type>{object}</msg>",
            esc(&m.text),
            esc(&m.code)
        ));
    }
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><response><result>{msgs}<status><code>{}</code><text>{}</text><type>error</type></status></result><stid>{}</stid></response>",
        esc(&e.code),
        esc(&e.text),
        esc(stid)
    )
}

/// The JSON value `v` as the element `name`: an object's keys as snake_case children (the
/// contacts as `<admin>`/`<technical>` with `<first>`/`<last>`/`<postal_code>`), an array as
/// the element repeated, a timestamp in the XML API's `YYYY-MM-DD HH:MM:SS`.
fn element(name: &str, v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::Array(items) => items.iter().for_each(|i| element(name, i, out)),
        Value::Object(map) => {
            out.push_str(&format!("<{name}>"));
            for (k, val) in map {
                element(&xml_name(k), val, out);
            }
            out.push_str(&format!("</{name}>"));
        }
        Value::String(s) => out.push_str(&format!("<{name}>{}</{name}>", esc(&xml_time(s)))),
        other => out.push_str(&format!("<{name}>{other}</{name}>")),
    }
}

fn xml_name(key: &str) -> String {
    match key {
        "adminContact" => "admin".into(),
        "technicalContact" => "technical".into(),
        "fname" => "first".into(),
        "lname" => "last".into(),
        "pcode" => "postal_code".into(),
        "caCertificate" => "ca_cert".into(),
        other => {
            let mut out = String::new();
            for c in other.chars() {
                if c.is_ascii_uppercase() {
                    out.push('_');
                    out.push(c.to_ascii_lowercase());
                } else {
                    out.push(c);
                }
            }
            out
        }
    }
}

/// `2026-12-02T05:09:58.000+0000` as `2026-12-02 05:09:58`; anything else as it is.
fn xml_time(s: &str) -> String {
    let b = s.as_bytes();
    let looks = s.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' && b[13] == b':' && b[16] == b':';
    if looks && s[..19].chars().all(|c| c.is_ascii_digit() || "-T:".contains(c)) {
        format!("{} {}", &s[..10], &s[11..19])
    } else {
        s.to_string()
    }
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_become_the_xml_apis_names_and_back() {
        assert_eq!(xml_name("signatureHashAlgorithm"), "signature_hash_algorithm");
        assert_eq!(xml_name("adminContact"), "admin");
        assert_eq!(camel_case("organization_unit_name"), "organizationUnitName");
        assert_eq!(xml_time("2026-12-02T05:09:58.000+0000"), "2026-12-02 05:09:58");
        assert_eq!(xml_time("QUICKSSLPREMIUM"), "QUICKSSLPREMIUM");
    }
}
