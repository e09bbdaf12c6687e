//! The XML gateway: every XML request example of the help pages replayed (with real CSRs, ids
//! and DNS lines) and answered in the documented shape, every element path the page's answer
//! shows present in ours; the S/MIME page's whole flow through the gateway.

use std::collections::BTreeSet;

use quick_xml::events::Event;
use reqwest::Method;
use serde_json::json;

use crate::support::*;

/// Every element path of a document (`response/result/status/code`), read by quick-xml.
fn paths(xml: &str) -> BTreeSet<String> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut stack: Vec<String> = Vec::new();
    let mut out = BTreeSet::new();
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                out.insert(stack.join("/"));
            }
            Ok(Event::Empty(e)) => {
                stack.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                out.insert(stack.join("/"));
                stack.pop();
            }
            Ok(Event::End(_)) => {
                stack.pop();
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not XML ({e}):\n{xml}"),
        }
    }
    out
}

/// The text of the first `<tag>` after `after` (or anywhere, for `""`).
fn text_of(xml: &str, after: &str, tag: &str) -> Option<String> {
    let from = if after.is_empty() { 0 } else { xml.find(after)? };
    let open = format!("<{tag}>");
    let start = xml[from..].find(&open)? + from + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    let t = xml[start..end].trim();
    Some(
        t.strip_prefix("<![CDATA[")
            .and_then(|t| t.strip_suffix("]]>"))
            .unwrap_or(t)
            .to_string(),
    )
}

/// `xml` with the text of the first `<tag>` after `after` replaced by `value`.
fn set_text(xml: &str, after: &str, tag: &str, value: &str) -> String {
    let Some(from) = (if after.is_empty() { Some(0) } else { xml.find(after) }) else {
        return xml.to_string();
    };
    let open = format!("<{tag}>");
    let Some(start) = xml[from..].find(&open).map(|i| i + from + open.len()) else {
        return xml.to_string();
    };
    let end = xml[start..].find(&format!("</{tag}>")).unwrap() + start;
    format!("{}{}{}", &xml[..start], value, &xml[end..])
}

/// Each `<request>` of a page with the `<response>` that follows it (before the next request).
fn examples(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("<request>") {
        let end = rest[start..].find("</request>").unwrap() + start + "</request>".len();
        let request = rest[start..end].to_string();
        rest = &rest[end..];
        let next = rest.find("<request>").unwrap_or(rest.len());
        let response = rest[..next]
            .find("<response>")
            .map(|s| {
                let e = rest[s..].find("</response>").unwrap() + s + "</response>".len();
                // The S/MIME page's answer has a stray "<" before its closing tag.
                rest[s..e].replace("< </", "</")
            })
            .unwrap_or_default();
        out.push((request, response));
    }
    out
}

async fn gateway(api: &Api, xml: &str) -> String {
    let r = api
        .http
        .post(format!("{}/gateway", api.sim.api_url.trim_end_matches("/v1")))
        .header("content-type", "text/xml")
        .body(xml.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.unwrap()
}

/// The paths of `documented` our `answer` lacks, leaving out what the page elides or what
/// is another object's (a domain's job in the poll answer, where ours are certificate jobs).
fn missing(documented: &str, answer: &str) -> Vec<String> {
    // The pages put `<stid>` inside `<result>` or after it; ours is after it.
    let ours = paths(answer);
    paths(documented)
        .into_iter()
        .map(|p| {
            if p == "response/result/stid" {
                "response/stid".to_string()
            } else {
                p
            }
        })
        .filter(|p| !p.contains("/job/domain"))
        // The S/MIME page's contact create sends no fax, though its info answer shows one.
        .filter(|p| {
            !(p == "response/result/data/certificate/admin/fax"
                && ours.contains("response/result/data/certificate/admin/phone"))
        })
        .filter(|p| !ours.contains(p))
        .collect()
}

/// A CSR for `name` with the subject fields prepareOrder reports (country, state, city,
/// organization, unit, e-mail), on one line.
fn full_csr(name: &str) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    use rcgen::DnType::*;
    for (t, v) in [
        (CommonName, name),
        (CountryName, "DE"),
        (StateOrProvinceName, "Bayern"),
        (LocalityName, "Regensburg"),
        (OrganizationName, "Company GmbH"),
        (OrganizationalUnitName, "Entwicklung"),
    ] {
        params.distinguished_name.push(t, v);
    }
    params
        .distinguished_name
        .push(CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]), "email@example.com");
    params.serialize_request(&key).unwrap().pem().unwrap().lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_xml_request_example_of_the_help_pages_is_answered_in_the_documented_shape() {
    let Some(dir) = shared("autodns/docs") else { return };
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut replayed = 0;
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let api = start().await;
        // A contact with every detail the pages' answers show.
        let c = api
            .call(
                Method::POST,
                "/sslcontact",
                Some(json!({"fname": "John", "lname": "Doe", "email": "john.doe@example.com", "phone": "+49-941-1234560",
                    "fax": "+49-941-1234561", "title": "Admin", "organization": "Example GmbH", "address": ["Maximilianstrasse 36000"],
                    "pcode": "93047", "city": "Regensburg", "country": "DE", "state": "Bayern"})),
            )
            .await;
        let mut contact = c.body["data"][0]["id"].as_i64().unwrap();
        // The reissue pages start from an existing certificate.
        let (job, _) = api.order(&["example.com"], contact, true, "setup").await;
        let m = api.wait_poll(job).await;
        let mut cert_id = m["object"]["data"]["id"].as_i64().unwrap();
        api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
        let mut dns = String::new();
        let mut message = None;
        let mut mail_job = None;
        for (request, documented) in examples(&text) {
            let code = text_of(&request, "", "code").unwrap();
            let mut xml = request
                .replace("<user>USER</user>", "<user>demo</user>")
                .replace("<password>PASSWORD</password>", "<password>demo-password</password>")
                .replace("<context>CONTEXT</context>", "<context>4</context>");
            let name = text_of(&xml, "<certificate>", "name").unwrap_or_else(|| "example.com".into());
            if name.contains('@') {
                xml = set_text(&xml, "<certificate>", "password", "download-secret");
            }
            for tag in ["plain", "csr"] {
                let csr = if name.contains('@') {
                    csr(&[&name])
                } else {
                    full_csr(&name)
                };
                xml = set_text(&xml, "", tag, &format!("<![CDATA[{csr}]]>"));
            }
            if !dns.is_empty() {
                xml = set_text(&xml, "<authentication>", "dns", &dns);
            }
            for who in ["<admin>", "<technical>"] {
                xml = set_text(&xml, who, "id", &contact.to_string());
            }
            if code == "400102" || code == "400104" {
                xml = set_text(&xml, "<certificate>", "id", &cert_id.to_string());
            }
            if code == "0905" {
                // An S/MIME order's approval mail is answered before the poll.
                if let Some(j) = mail_job.take() {
                    let (status, _) = api.sim_post(&format!("/jobs/{j}"), json!({"action": "approve"})).await;
                    assert_eq!(status, 200);
                    api.wait_job(j, "SUCCESS").await;
                }
                // A job's message waits in the queue.
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            }
            if code == "0906" {
                xml = set_text(&xml, "<message>", "id", &message.unwrap_or(0).to_string());
            }
            if code == "400104"
                && let Some(j) = mail_job.take()
            {
                // The S/MIME page's flow: the approval answered, the notification polled
                // (PollInfo) for the new certificate's id, confirmed (PollConfirm), then the
                // info, all through the gateway.
                let (status, _) = api.sim_post(&format!("/jobs/{j}"), json!({"action": "approve"})).await;
                assert_eq!(status, 200);
                api.wait_job(j, "SUCCESS").await;
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                let auth = "<auth><user>demo</user><context>4</context><password>demo-password</password></auth>";
                let polled = gateway(
                    &api,
                    &format!("<request>{auth}<task><code>0905</code></task></request>"),
                )
                .await;
                assert_eq!(
                    text_of(&polled, "<message>", "code").as_deref(),
                    Some("S400101"),
                    "{polled}"
                );
                cert_id = text_of(&polled, "<certificate>", "id").unwrap().parse().unwrap();
                assert_eq!(
                    text_of(&polled, "<certificate>", "certificate_type").as_deref(),
                    Some("MAIL"),
                    "{polled}"
                );
                let m = text_of(&polled, "<message>", "id").unwrap();
                let confirmed = gateway(
                    &api,
                    &format!("<request>{auth}<task><code>0906</code><message><id>{m}</id></message></task></request>"),
                )
                .await;
                assert_eq!(
                    text_of(&confirmed, "<status>", "code").as_deref(),
                    Some("S0906"),
                    "{confirmed}"
                );
                xml = set_text(&xml, "<certificate>", "id", &cert_id.to_string());
            }
            let answer = gateway(&api, &xml).await;
            let status = text_of(&answer, "<status>", "type").unwrap_or_default();
            if status == "error" {
                problems.push(format!("{}: task {code} failed:\n{xml}\n{answer}", file.display()));
                continue;
            }
            match code.as_str() {
                "400201" => {
                    contact = text_of(&answer, "<object>", "value")
                        .and_then(|v| v.parse().ok())
                        .unwrap();
                }
                "400110" => dns = text_of(&answer, "<method>DNS</method>", "dns").unwrap_or_default(),
                "400101" if name.contains('@') => {
                    mail_job = text_of(&answer, "<job>", "id").and_then(|j| j.parse().ok());
                }
                "0905" => {
                    message = text_of(&answer, "<message>", "id").and_then(|m| m.parse().ok());
                    if let Some(id) = text_of(&answer, "<certificate>", "id").and_then(|c| c.parse().ok()) {
                        cert_id = id;
                    }
                }
                _ => {}
            }
            if documented.is_empty() {
                problems.push(format!("{}: task {code} has no documented answer", file.display()));
                continue;
            }
            let lacking = missing(&documented, &answer);
            if !lacking.is_empty() {
                problems.push(format!("{}: task {code} lacks {lacking:?}:\n{answer}", file.display()));
            }
            replayed += 1;
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(replayed >= 20, "only {replayed} XML examples replayed");
}

/// The job list (400115, from the managing-orders page, whose excerpt is the `<task>` alone)
/// and a wrong login are answered in the shapes the real answers show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_list_and_a_wrong_login_are_answered_as_the_real_samples_show() {
    let Some(real) = shared("autodns/real") else { return };
    let api = start().await;
    let contact = api.contact().await;
    api.order(&["example.com"], contact, false, "listed").await;
    let task = std::fs::read_to_string(
        real.join("XML_400115_certificate_job_list__help-managing-certificate-orders_2019.request.xml"),
    )
    .unwrap();
    let auth = "<auth><user>demo</user><password>demo-password</password><context>4</context></auth>";
    let answer = gateway(&api, &format!("<request>{auth}{task}</request>")).await;
    let documented = std::fs::read_to_string(
        real.join("XML_400115_certificate_job_list__help-managing-certificate-orders_2019.response.TRUNCATED.xml"),
    )
    .unwrap();
    let lacking = missing(&documented, &answer);
    assert!(lacking.is_empty(), "{lacking:?}\n{answer}");
    assert_eq!(
        text_of(&answer, "<job>", "object").as_deref(),
        Some("example.com"),
        "{answer}"
    );
    assert_eq!(text_of(&answer, "<job>", "type").as_deref(), Some("ssl"), "{answer}");

    let wrong = gateway(
        &api,
        "<request><auth><user>demo</user><password>nope</password><context>4</context></auth><task><code>0905</code></task></request>",
    )
    .await;
    let documented = std::fs::read_to_string(real.join("XML_auth_error__acme.sh-issue5317_2024.response.xml")).unwrap();
    let lacking = missing(&documented, &wrong);
    assert!(lacking.is_empty(), "{lacking:?}\n{wrong}");
    assert_eq!(text_of(&wrong, "<msg>", "code").as_deref(), Some("EF01000"));
    assert!(!wrong.contains("nope"), "the password is not echoed");
    // Nothing was done for it, and the log holds no password.
    let log = api.sim_get("/requests").await.to_string();
    assert!(!log.contains("demo-password") && !log.contains("nope"), "{log}");
}
