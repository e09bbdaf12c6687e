//! The real API, not our belief of it: every answer InterNetX and others published (in
//! `shared/autodns/real/`, see its SOURCES.md) is served to certkeeper's own client, route by
//! route, and must be read as the client reads answers in production.

use std::time::Duration;

use certkeeper::api::wire::JobStatus;
use certkeeper::api::{Client, Error};
use certkeeper::config::{ApiConfig, Secret};
use serde_json::Value;

use crate::support::*;

/// A loopback server that answers every request with `status` and `body`.
async fn serving(status: u16, body: String) -> (Client, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                let _ = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    let client = Client::new(&ApiConfig {
        url,
        user: "u".into(),
        context: 4,
        password: Secret::new("p".into()),
        password_file: None,
        roots: certkeeper::config::Roots::default(),
        ca_pem: None,
        timeout: Duration::from_secs(5),
        rate_limit: 100.0,
    })
    .unwrap()
    .with_retry(certkeeper::api::RetryPolicy {
        attempts: 1,
        ..Default::default()
    });
    (client, task)
}

/// A sample's envelope and HTTP status: the JS SDK's wrappers hold the envelope inside.
fn envelope(file: &str, v: Value) -> (u16, Value) {
    if file.contains(".result-wrapper.") {
        let status = v["status"].as_u64().unwrap_or(200) as u16;
        let inner = if v.get("result").is_some() {
            &v["result"]
        } else {
            &v["data"]
        };
        return (status, inner.clone());
    }
    let status = file
        .split(".error-http")
        .nth(1)
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    (status, v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_real_answer_is_read_by_the_client_as_in_production() {
    let Some(dir) = shared("autodns/real") else { return };
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json") && !n.contains(".request"))
        .collect();
    files.sort();
    let mut read = 0;
    for file in &files {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let (status, env) = envelope(file, serde_json::from_str(&text).unwrap());
        let route = file.split("__").next().unwrap();
        let (client, server) = serving(status, env.to_string()).await;
        let what = format!("{file} (HTTP {status})");
        if status >= 400 {
            // An error is a refusal with the API's own code and words.
            let e = Client::check(
                reqwest::StatusCode::from_u16(status).unwrap(),
                None,
                env.to_string().as_bytes(),
            )
            .unwrap_err();
            assert!(matches!(e, Error::Refused { .. }), "{what}: {e:?}");
            assert!(!e.outcome_unknown(), "{what}: a refusal proves nothing was done");
            assert!(
                e.to_string().len() > "the API refused the request: ".len() + 2,
                "{what}: {e}"
            );
        } else if file.contains(".TRUNCATED.") && route.starts_with("PUT_certificate") {
            // Cut off before its status type: an answer whose outcome is unknown, never a failure.
            let e = client
                .reissue(1, &order(), "ctid", client.turn().await)
                .await
                .unwrap_err();
            assert!(e.outcome_unknown(), "{what}: {e:?}");
        } else {
            match route {
                "POST_certificate_prepareOrder" => {
                    let p = client
                        .prepare_order(
                            "csr",
                            "QUICKSSLPREMIUM",
                            certkeeper::api::wire::BusinessCase::Create,
                            None,
                        )
                        .await;
                    let p = p.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!p.dns_lines.is_empty(), "{what}: no DNS line read");
                    for (name, line) in &p.dns_lines {
                        certkeeper::dns::read_dcv_line(line, std::slice::from_ref(name))
                            .unwrap_or_else(|e| panic!("{what}: the real DNS line is refused: {e}"));
                    }
                }
                "POST_certificate" => {
                    let job = client
                        .create(&order(), "ctid", client.turn().await)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(job > 0, "{what}");
                }
                "PUT_certificate_id" => {
                    let job = client
                        .reissue(1, &order(), "ctid", client.turn().await)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(job > 0, "{what}");
                }
                "PUT_certificate_id_renew" => {
                    let job = client
                        .renew(1, &order(), "ctid", client.turn().await)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(job > 0, "{what}");
                }
                "GET_certificate_id" => {
                    let sample = &env["data"][0];
                    let id = sample["id"].as_i64().unwrap();
                    let c = client.certificate(id).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                    // Every field certkeeper relies on is read where the sample has it, so that a
                    // field renamed or retyped in certkeeper's wire type fails here.
                    let has = |k: &str| sample.get(k).is_some_and(|v| !v.is_null());
                    assert_eq!(c.name.is_some(), has("name"), "{what}: name");
                    assert_eq!(c.server.is_some(), has("server"), "{what}: server");
                    assert_eq!(c.serial_number.is_some(), has("serialNumber"), "{what}: serialNumber");
                    assert_eq!(c.expire.is_some(), has("expire"), "{what}: expire");
                    assert_eq!(c.payable.is_some(), has("payable"), "{what}: payable");
                    assert_eq!(c.created.is_some(), has("created"), "{what}: created");
                    assert_eq!(c.csr.is_some(), has("csr"), "{what}: csr");
                    assert_eq!(
                        c.reissue_required.is_some(),
                        has("reissueRequired"),
                        "{what}: reissueRequired"
                    );
                    let cas = sample["certificationAuthority"].as_array().map_or(0, Vec::len);
                    assert_eq!(c.certification_authority.len(), cas, "{what}: certificationAuthority");
                    for parsed in c.payable.iter().chain(&c.expire).chain(&c.created) {
                        assert!(
                            certkeeper::api::wire::parse_time(parsed).is_some(),
                            "{what}: the date {parsed} does not parse"
                        );
                    }
                }
                "GET_job_id" => {
                    let id = env["data"][0]["job"]["id"].as_i64().unwrap();
                    let j = client.job(id).await.unwrap_or_else(|e| panic!("{what}: {e}"));
                    let status = j
                        .job
                        .status
                        .clone()
                        .unwrap_or_else(|| panic!("{what}: no job status read"));
                    assert_eq!(
                        status.as_str(),
                        env["data"][0]["job"]["status"].as_str().unwrap(),
                        "{what}"
                    );
                    // A job waiting for domain control is under way, not ended.
                    if env["data"][0]["job"]["status"] == "DEFERRED" {
                        assert_eq!(status, JobStatus::Deferred, "{what}");
                        assert!(!status.is_final(), "{what}");
                        assert_eq!(
                            j.job.sub_status.as_deref(),
                            env["data"][0]["job"]["subStatus"].as_str(),
                            "{what}"
                        );
                    }
                }
                "GET_poll" => {
                    let m = client.poll().await.unwrap_or_else(|e| panic!("{what}: {e}"));
                    let m = m.unwrap_or_else(|| panic!("{what}: the message was not read"));
                    assert_eq!(Some(m.id), env["data"][0]["id"].as_i64(), "{what}");
                    let job = m.job.unwrap_or_else(|| panic!("{what}: no job in the message"));
                    assert!(job.id > 0, "{what}: no job id");
                    assert_eq!(
                        job.kind.as_deref(),
                        env["data"][0]["job"]["type"].as_str(),
                        "{what}: job.type"
                    );
                    assert!(
                        job.status.is_some_and(|s| s.is_final()),
                        "{what}: the job's end not read"
                    );
                    assert_eq!(
                        certkeeper::api::wire::object_certificate_id(&m.object),
                        env["data"][0]["object"]["data"]["id"].as_i64(),
                        "{what}: the certificate id in object.data"
                    );
                }
                "PUT_poll_id" => client.confirm(1).await.unwrap_or_else(|e| panic!("{what}: {e}")),
                "POST_sslcontact" => {
                    let details: certkeeper::config::ContactDetails = serde_json::from_str(
                        r#"{"fname":"Jo","lname":"Doe","email":"jo@example.com","phone":"+49-941-1234560"}"#,
                    )
                    .unwrap();
                    let id = client
                        .create_contact(&details)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(id > 0, "{what}");
                }
                "POST_job_search" => {
                    let since = time::OffsetDateTime::UNIX_EPOCH;
                    let jobs = client
                        .search_jobs("example.com", since, false)
                        .await
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!jobs.is_empty(), "{what}: no job read");
                    // "DEFFERED" (sic) is the waiting state DEFERRED.
                    if env["data"][0]["job"]["status"] == "DEFFERED" {
                        assert_eq!(jobs[0].job.status, Some(JobStatus::Deferred), "{what}");
                    }
                }
                _ => {
                    Client::check(reqwest::StatusCode::OK, None, env.to_string().as_bytes())
                        .unwrap_or_else(|e| panic!("{what}: {e}"));
                }
            }
        }
        server.abort();
        read += 1;
    }
    assert!(read >= 20, "only {read} real answers were found in {}", dir.display());
}

fn order() -> certkeeper::api::wire::OrderRequest {
    use certkeeper::api::wire::{OrderFor, OrderRequest};
    let what = OrderFor {
        name: "example.com".into(),
        product: "QUICKSSLPREMIUM".into(),
        months: 12,
        software: "APACHESSL".into(),
        csr: "x".into(),
        admin_contact: 1,
        technical_contact: 1,
    };
    OrderRequest::new(None, what, certkeeper::api::wire::OrderAuthentication::dns(None, true))
}

/// Where real answers disagree with each other or with the spec, autodns-sim offers each form
/// behind a knob: certkeeper issues against every one of them (and, with no CA certificates in
/// the answer, refuses what it cannot verify rather than install it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certkeeper_issues_against_every_form_the_real_answers_show() {
    use autodns_sim::{CaList, DcvForm, Faults, RateLimitAnswer};
    let quiet = Faults {
        rate_limit: 0.0,
        ..Faults::default()
    };
    let forms: Vec<(&str, Faults, &str)> = vec![
        (
            "one CA certificate",
            Faults {
                ca_list: CaList::One,
                ..quiet.clone()
            },
            "",
        ),
        (
            "DCV line with double tabs",
            Faults {
                dcv_form: DcvForm::DoubleTab,
                ..quiet.clone()
            },
            "",
        ),
        (
            "DCV entry without a name",
            Faults {
                dcv_form: DcvForm::NoName,
                ..quiet.clone()
            },
            "",
        ),
        (
            "both",
            Faults {
                dcv_form: DcvForm::DoubleTabNoName,
                ..quiet.clone()
            },
            "",
        ),
        (
            "payable shown",
            Faults {
                payable: true,
                ..quiet.clone()
            },
            "",
        ),
        ("BASIC_SSL at _dnsauth", quiet.clone(), "product = \"BASIC_SSL\""),
        ("RAPID_SSL", quiet.clone(), "product = \"RAPID_SSL\""),
        (
            "3 requests/s per address, answered by a delay",
            Faults {
                rate_limit: 3.0,
                rate_limit_answer: RateLimitAnswer::Delay,
                ..Faults::default()
            },
            "",
        ),
        (
            "3 requests/s per address, answered by 429 without Retry-After",
            Faults {
                rate_limit: 3.0,
                rate_limit_answer: RateLimitAnswer::Status429,
                ..Faults::default()
            },
            "",
        ),
    ];
    for (i, (what, faults, extra)) in forms.into_iter().enumerate() {
        let env = TestEnv::start_with(&format!("form{i}"), faults).await;
        env.write_config(
            &[Cert::autodns("www.example.com"), Cert::hook("shop.example.net")],
            extra,
        );
        let out = env.run(&["run", "--once"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
        for name in ["www.example.com", "shop.example.net"] {
            env.assert_installed(name);
            assert_eq!(env.paid(name), 1, "{what}: {name}");
        }
    }

    // No CA certificate at all (a 2022 mock): the leaf cannot be verified to a root, so nothing
    // is installed and nothing more is paid; the error says why.
    let env = TestEnv::start_with(
        "form-no-ca",
        Faults {
            ca_list: CaList::Empty,
            ..quiet
        },
    )
    .await;
    env.write_config(&[Cert::autodns("www.example.com")], "");
    let out = env.run(&["run", "--once"], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("chain"), "{}", stderr(&out));
    assert!(!env.live("www.example.com").join("cert.pem").exists());
    assert_eq!(env.paid("www.example.com"), 1);
}
