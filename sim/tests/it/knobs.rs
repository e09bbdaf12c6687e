//! The defaults the real samples dictate, and the knob that brings back each friendlier or
//! alternative form.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn knobs(api: &Api, knobs: Value) {
    let mut all = json!({"rate_limit": 0});
    all.as_object_mut().unwrap().extend(knobs.as_object().unwrap().clone());
    let (code, body) = api.sim_post("/faults", all).await;
    assert_eq!(code, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_job_moves_to_the_history_unless_finished_jobs_stay() {
    let api = start().await;
    let contact = api.contact().await;
    knobs(&api, json!({"job_outcome": "stuck"})).await;
    let (job, _) = api.order(&["hist.example.com"], contact, true, "h1").await;
    let by_id = json!({"filters": [{"key": "id", "value": job.to_string()}]});

    // Running: at GET /job/{id} and in /job/_search, not in the history.
    let j = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (j.status, &j.body["data"][0]["job"]["status"]),
        (200, &json!("RUNNING"))
    );
    assert_eq!(j.body["object"], json!({"type": "ObjectJob", "value": job.to_string()}));
    let h = api.call(Method::GET, &format!("/job/history/{job}"), None).await;
    assert_eq!(
        (h.status, &h.body["status"]["code"], &h.body["messages"][0]["code"]),
        (404, &json!("E300134"), &json!("EF300101")),
        "{}",
        h.body
    );
    let s = api.call(Method::POST, "/job/_search", Some(by_id.clone())).await;
    assert_eq!(s.body["object"]["summary"], 1);
    // job_search_data: the sample's search answer has no object.data, so no certificate id.
    assert!(s.body["data"][0]["object"].get("data").is_none(), "{}", s.body);
    knobs(&api, json!({"job_outcome": "stuck", "job_search_data": true})).await;
    let s = api.call(Method::POST, "/job/_search", Some(by_id.clone())).await;
    assert!(s.body["data"][0]["object"]["data"]["id"].is_i64(), "{}", s.body);
    let h = api
        .call(Method::POST, "/job/history/_search", Some(by_id.clone()))
        .await;
    assert_eq!((h.status, &h.body["object"]["summary"]), (200, &json!(0)));

    // Ended: 404 EF300101 at GET /job/{id}, served by the history.
    api.sim_post(&format!("/jobs/{job}"), json!({"action": "complete"}))
        .await;
    let gone = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (
            gone.status,
            &gone.body["status"]["code"],
            &gone.body["messages"][0]["code"]
        ),
        (404, &json!("E300114"), &json!("EF300101")),
        "{}",
        gone.body
    );
    assert_eq!(
        gone.body["object"],
        json!({"type": "ObjectJob", "value": job.to_string()})
    );
    assert_schema("JsonResponseData", &gone.body);
    let h = api.call(Method::GET, &format!("/job/history/{job}"), None).await;
    assert_eq!(
        (h.status, &h.body["status"]["code"], &h.body["data"][0]["job"]["status"]),
        (200, &json!("S300134"), &json!("SUCCESS"))
    );
    assert_schema("JsonResponseDataObjectJob", &h.body);
    let s = api.call(Method::POST, "/job/_search", Some(by_id.clone())).await;
    assert_eq!(s.body["object"]["summary"], 0);
    let h = api
        .call(Method::POST, "/job/history/_search", Some(by_id.clone()))
        .await;
    assert_eq!(
        (&h.body["status"]["code"], &h.body["object"]["summary"]),
        (&json!("S300135"), &json!(1))
    );
    assert_schema("JsonResponseDataObjectJob", &h.body);

    // finished_jobs_stay: both places serve it.
    knobs(&api, json!({"finished_jobs_stay": true})).await;
    let j = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (j.status, &j.body["data"][0]["job"]["status"]),
        (200, &json!("SUCCESS"))
    );
    let s = api.call(Method::POST, "/job/_search", Some(by_id.clone())).await;
    assert_eq!(s.body["object"]["summary"], 1);
    let h = api.call(Method::POST, "/job/history/_search", Some(by_id)).await;
    assert_eq!(h.body["object"]["summary"], 1);
    // An id that never was a job is not found either way.
    let none = api.call(Method::GET, "/job/history/5", None).await;
    assert_eq!(
        (none.status, &none.body["messages"][0]["code"]),
        (404, &json!("EF300101"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_job_waits_deferred_and_notify_deferred_says_so_once() {
    let api = start().await;
    let contact = api.contact().await;
    // Default: DEFERRED / WF_DNS_AUTH while the record is missing, and no message about it.
    let (job, line) = api.order(&["def1.example.com"], contact, false, "d1").await;
    let j = api.wait_job(job, "DEFERRED").await;
    assert_eq!(j["job"]["subStatus"], "WF_DNS_AUTH");
    assert_schema("ObjectJob", &j);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let p = api.call(Method::GET, "/poll", None).await;
    assert_eq!(p.body["object"]["summary"], 0, "{}", p.body);
    let token = line.rsplit('"').nth(1).unwrap();
    api.sim.control().set_txt("def1.example.com", token).unwrap();
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "SUCCESS");
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;

    knobs(&api, json!({"notify_deferred": true})).await;
    let (job, line) = api.order(&["def2.example.com"], contact, false, "d2").await;
    let m = api.wait_poll(job).await;
    assert_eq!(
        (&m["job"]["status"], &m["job"]["subStatus"], &m["ctid"]),
        (&json!("DEFERRED"), &json!("WF_DNS_AUTH"), &json!("d2"))
    );
    assert!(m.get("messages").is_none(), "{m}");
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
    // Only once: the job stays DEFERRED without another message, until it ends.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let p = api.call(Method::GET, "/poll", None).await;
    assert_eq!(p.body["object"]["summary"], 0, "{}", p.body);
    let token = line.rsplit('"').nth(1).unwrap();
    api.sim.control().set_txt("def2.example.com", token).unwrap();
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "SUCCESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_heads_the_queue_until_its_owner_confirms_it() {
    let api = start().await;
    let contact = api.contact().await;
    knobs(&api, json!({"foreign_poll": true, "foreign_poll_hold": "700ms"})).await;

    // First kind: another client's job, with its own ctid.
    let (job, _) = api.order(&["own1.example.com"], contact, true, "own-1").await;
    api.wait_job(job, "SUCCESS").await;
    let p = api.call(Method::GET, "/poll", None).await;
    assert_schema("JsonResponseDataPollMessage", &p.body);
    let head = p.body["data"][0].clone();
    assert_eq!(p.body["object"]["summary"], 2);
    assert_ne!(head["job"]["id"], json!(job));
    assert!(head["ctid"].as_str().unwrap().starts_with("foreign-"), "{head}");
    assert_ne!(head["object"]["value"], "own1.example.com");
    // It stays: nobody confirms it for now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = api.call(Method::GET, "/poll", None).await;
    assert_eq!(again.body["data"][0]["id"], head["id"]);
    // Then its owner confirms it and it is gone; ours is next.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let p = api.call(Method::GET, "/poll", None).await;
    assert_eq!(
        (
            &p.body["data"][0]["job"]["id"],
            &p.body["data"][0]["ctid"],
            &p.body["object"]["summary"]
        ),
        (&json!(job), &json!("own-1"), &json!(1))
    );
    api.call(Method::PUT, &format!("/poll/{}", p.body["data"][0]["id"]), None)
        .await;
    assert_eq!(api.sim_get("/stats").await["foreign_confirmed"], 0);

    // Second kind: a system notice without a job. Confirming it is accepted, and counted.
    let (job, _) = api.order(&["own2.example.com"], contact, true, "own-2").await;
    api.wait_job(job, "SUCCESS").await;
    let p = api.call(Method::GET, "/poll", None).await;
    assert_schema("JsonResponseDataPollMessage", &p.body);
    let notice = p.body["data"][0].clone();
    assert!(notice.get("job").is_none() && notice.get("ctid").is_none(), "{notice}");
    assert!(
        notice["notice"].is_string() && notice["notify"]["type"].is_string(),
        "{notice}"
    );
    let c = api.call(Method::PUT, &format!("/poll/{}", notice["id"]), None).await;
    assert_eq!((c.status, &c.body["object"]["summary"]), (200, &json!(1)), "{}", c.body);
    let stats = api.sim_get("/stats").await;
    assert_eq!(
        (&stats["foreign_confirmed"], &stats["poll_confirmed"]),
        (&json!(1), &json!(2))
    );
    assert_eq!(api.sim.control().stats().foreign_confirmed, 1);
    let m = api.wait_poll(job).await;
    assert_eq!(m["ctid"], "own-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_routes_refuse_undocumented_keys_with_ef00022() {
    let api = start().await;
    api.contact().await;
    let cases = [
        ("/job/_search", "ctid"),
        ("/job/history/_search", "ctid"),
        ("/job/_search", "sld2"),
        ("/certificate/_search", "ctid"),
        ("/certificate/_search", "certificate_type"),
        ("/sslcontact/_search", "ctid"),
        ("/sslcontact/_search", "name"),
    ];
    for (path, key) in cases {
        let a = api
            .call(
                Method::POST,
                path,
                Some(json!({"filters": [{"key": key, "value": "x"}]})),
            )
            .await;
        assert_eq!(a.status, 400, "{path} {key}: {}", a.body);
        assert_eq!(a.body["status"], json!({"type": "ERROR"}), "{}", a.body);
        let m = &a.body["messages"][0];
        assert_eq!(
            (&m["code"], &m["text"], &m["status"], &m["objects"][0]),
            (
                &json!("EF00022"),
                &json!("Schluessel nicht erlaubt."),
                &json!("ERROR"),
                &json!({"type": "filters[0]/key", "value": key})
            )
        );
        assert_schema("JsonResponseData", &a.body);
    }
    // Nested, and in an order: the place is named.
    let nested = json!({"filters": [{"key": "object", "value": "a"}, {"link": "OR", "filters": [{"key": "status", "value": "x"}, {"key": "ctid", "value": "c"}]}]});
    let a = api.call(Method::POST, "/job/_search", Some(nested)).await;
    assert_eq!(a.body["messages"][0]["objects"][0]["type"], "filters[1]/filters[1]/key");
    let a = api
        .call(
            Method::POST,
            "/job/_search",
            Some(json!({"orders": [{"key": "ctid", "type": "ASC"}]})),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["messages"][0]["objects"][0]["type"]),
        (400, &json!("orders[0]/key"))
    );
    // Every documented key is taken.
    for (path, keys) in [
        (
            "/job/_search",
            &[
                "parent",
                "execution",
                "subStatus",
                "type",
                "created",
                "id",
                "updated",
                "status",
                "object",
                "action",
            ][..],
        ),
        (
            "/certificate/_search",
            &[
                "product",
                "technical",
                "orderId",
                "created",
                "admin",
                "type",
                "expire",
                "domain",
                "name",
                "comment",
                "id",
                "updated",
                "authentication",
            ][..],
        ),
        (
            "/sslcontact/_search",
            &[
                "country",
                "fname",
                "address",
                "city",
                "created",
                "title",
                "lname",
                "phone",
                "organization",
                "state",
                "id",
                "fax",
                "pcode",
                "updated",
                "email",
            ][..],
        ),
    ] {
        for key in keys {
            let a = api
                .call(
                    Method::POST,
                    path,
                    Some(json!({"filters": [{"key": key, "value": "x"}], "orders": [{"key": key}]})),
                )
                .await;
            assert_eq!(a.status, 200, "{path} {key}: {}", a.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn like_takes_percent_and_nested_filters_group() {
    let api = start().await;
    let contact = api.contact().await;
    for name in ["www.example.com", "shop.example.com", "www.example.net"] {
        let (job, _) = api.order(&[name], contact, true, name).await;
        api.wait_job(job, "SUCCESS").await;
    }
    let names = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let search = |q: Value| {
        let api = &api;
        async move {
            let a = api.call(Method::POST, "/certificate/_search", Some(q)).await;
            assert_eq!(a.status, 200, "{}", a.body);
            a.body
        }
    };
    let like = |v: &str| json!({"filters": [{"key": "name", "operator": "LIKE", "value": v}], "orders": [{"key": "name", "type": "ASC"}]});
    assert_eq!(
        names(&search(like("%.example.com")).await),
        ["shop.example.com", "www.example.com"]
    );
    assert_eq!(
        names(&search(like("www.%")).await),
        ["www.example.com", "www.example.net"]
    );
    // `*` is no wildcard: it matches only itself.
    assert!(names(&search(like("*.example.com")).await).is_empty());
    // product = QUICKSSLPREMIUM AND (name LIKE %.net OR name = shop.example.com), by name descending.
    let nested = json!({"filters": [
        {"key": "product", "value": "QUICKSSLPREMIUM"},
        {"link": "AND", "filters": [
            {"key": "name", "operator": "LIKE", "value": "%.net"},
            {"key": "name", "value": "shop.example.com", "link": "OR"}
        ]}
    ], "orders": [{"key": "name", "type": "DESC"}]});
    let found = search(nested).await;
    assert_eq!(names(&found), ["www.example.net", "shop.example.com"]);
    assert_eq!(found["object"], json!({"type": "Certificate", "summary": 2}));
    // The same on jobs, in the history.
    let h = api
        .call(
            Method::POST,
            "/job/history/_search",
            Some(json!({"filters": [{"key": "object", "operator": "LIKE", "value": "%example.com"}]})),
        )
        .await;
    assert_eq!(h.body["object"]["summary"], 2, "{}", h.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_precision_day_truncates_created_and_its_filter() {
    let api = start().await;
    let contact = api.contact().await;
    // Not within seconds after midnight, where "a minute ago" would be yesterday.
    let now = time::OffsetDateTime::now_utc();
    let since_midnight = now - now.replace_time(time::Time::MIDNIGHT);
    if since_midnight < time::Duration::seconds(10) {
        tokio::time::sleep(Duration::from_secs(10)).await;
    }
    let a_moment_ago = autodns_sim::time::format(time::OffsetDateTime::now_utc() - time::Duration::seconds(5));
    let since = |v: &str| json!({"filters": [{"key": "created", "operator": "GREATER_EQUAL", "value": v}]});

    let (job, _) = api.order(&["sec.example.com"], contact, true, "c1").await;
    let j = api.wait_job(job, "SUCCESS").await;
    assert!(!j["job"]["created"].as_str().unwrap().contains("T00:00:00.000"), "{j}");
    let h = api
        .call(Method::POST, "/job/history/_search", Some(since(&a_moment_ago)))
        .await;
    assert_eq!(h.body["object"]["summary"], 1, "{}", h.body);

    knobs(&api, json!({"created_precision": "day"})).await;
    let (job, _) = api.order(&["day.example.com"], contact, true, "c2").await;
    let j = api.wait_job(job, "SUCCESS").await;
    let midnight = autodns_sim::time::format(time::OffsetDateTime::now_utc().replace_time(time::Time::MIDNIGHT));
    assert!(midnight.ends_with("T00:00:00.000+0000"));
    assert_eq!(j["job"]["created"], json!(midnight), "{j}");
    // updated and execution keep their time.
    assert_ne!(j["job"]["updated"], json!(midnight));
    let cert = j["object"]["data"]["id"].as_i64().unwrap();
    let c = api.call(Method::GET, &format!("/certificate/{cert}"), None).await;
    assert_eq!(c.body["data"][0]["created"], json!(midnight));
    // A filter on created compares with the truncated value: "since a moment ago" misses both.
    let h = api
        .call(Method::POST, "/job/history/_search", Some(since(&a_moment_ago)))
        .await;
    assert_eq!(h.body["object"]["summary"], 0, "{}", h.body);
    let h = api
        .call(
            Method::POST,
            "/job/history/_search",
            Some(json!({"filters": [{"key": "created", "value": midnight}]})),
        )
        .await;
    assert_eq!(h.body["object"]["summary"], 2, "{}", h.body);
    let s = api
        .call(Method::POST, "/certificate/_search", Some(since(&a_moment_ago)))
        .await;
    assert_eq!(s.body["object"]["summary"], 0, "{}", s.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_order_answers_the_key_type_in_algorithm_and_the_curve_in_ec_curve() {
    let api = start().await;
    for (key, algorithm, curve) in [
        (
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            "ECC",
            Some("PRIME_256_V1"),
        ),
        (
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap(),
            "ECC",
            Some("SECP_384_R1"),
        ),
        (
            rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap(),
            "RSA",
            None,
        ),
    ] {
        let p = api.prepare(&csr_with(&key, &["alg.example.com"], &[])).await;
        assert_eq!(p.status, 200, "{}", p.body);
        let d = &p.body["data"][0];
        assert_eq!(
            (&d["algorithm"], d.get("ecCurve")),
            (&json!(algorithm), curve.map(|c| json!(c)).as_ref()),
            "{d}"
        );
        assert_schema("JsonResponseDataCertificateData", &p.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_list_and_payable_shape_the_certificate() {
    let api = start().await;
    let contact = api.contact().await;
    let (job, _) = api.order(&["ca.example.com"], contact, true, "ca").await;
    let cert = api.wait_poll(job).await["object"]["data"]["id"].as_i64().unwrap();
    let info = || {
        let api = &api;
        async move {
            let a = api.call(Method::GET, &format!("/certificate/{cert}"), None).await;
            assert_schema("JsonResponseDataCertificate", &a.body);
            a.body["data"][0].clone()
        }
    };
    let types = |c: &Value| -> Vec<String> {
        c["certificationAuthority"]
            .as_array()
            .expect("certificationAuthority is always a list")
            .iter()
            .map(|a| a["caType"].as_str().unwrap().to_string())
            .collect()
    };
    let c = info().await;
    assert_eq!(types(&c), ["INTERMEDIATE", "ROOT"]);
    for knob in ["payable", "multiyear", "reissueRequired"] {
        assert!(c.get(knob).is_none(), "{knob} without the payable knob: {c}");
    }
    knobs(&api, json!({"ca_list": "one"})).await;
    assert_eq!(types(&info().await), ["INTERMEDIATE"]);
    knobs(&api, json!({"ca_list": "none"})).await;
    assert!(types(&info().await).is_empty());
    knobs(&api, json!({"ca_list": "both", "payable": true})).await;
    let c = info().await;
    assert_eq!(types(&c), ["INTERMEDIATE", "ROOT"]);
    assert!(
        c["payable"].is_string() && c["multiyear"] == false && c["reissueRequired"] == true,
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_brief_answers_ids_and_names_only() {
    let api = start().await;
    let contact = api.contact().await;
    let (job, _) = api.order(&["brief.example.com"], contact, true, "brief").await;
    let cert = api.wait_poll(job).await["object"]["data"]["id"].as_i64().unwrap();
    let search = || {
        let api = &api;
        async move {
            let q = json!({"filters": [{"key": "name", "value": "brief.example.com", "operator": "EQUAL"}]});
            let a = api.call(Method::POST, "/certificate/_search", Some(q)).await;
            a.body["data"][0].clone()
        }
    };
    let full = search().await;
    assert_eq!(full["id"], cert, "{full}");
    assert!(full["product"].is_string() && full["server"].is_string(), "{full}");
    knobs(&api, json!({"search_brief": true})).await;
    let brief = search().await;
    assert_eq!(brief, json!({"id": cert, "name": "brief.example.com"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcv_form_writes_the_dns_entry_as_each_sample_does() {
    let api = start().await;
    let contact = api.contact().await;
    let plain = csr(&["f.example.com", "g.example.com"]);
    for (form, named, sep) in [
        ("spec", true, "\t"),
        ("double_tab", true, "\t\t"),
        ("no_name", false, "\t"),
        ("double_tab_no_name", false, "\t\t"),
    ] {
        knobs(&api, json!({"dcv_form": form})).await;
        let p = api.prepare(&plain).await;
        assert_schema("JsonResponseDataCertificateData", &p.body);
        let entries = p.body["data"][0]["authentication"].as_array().unwrap().clone();
        let dns: Vec<&Value> = entries.iter().filter(|a| a["method"] == "DNS").collect();
        assert_eq!(dns.len(), 2, "{form}");
        for (entry, name) in dns.iter().zip(["f.example.com", "g.example.com"]) {
            let line = entry["dns"].as_str().unwrap();
            assert!(
                line.starts_with(&format!("{name}.{sep}300\tIN\tTXT\t\"")),
                "{form}: {line:?}"
            );
            assert_eq!(entry.get("name").is_some(), named, "{form}: {entry}");
            assert_eq!(entry.get("provisioning").is_some(), named, "{form}: {entry}");
        }
        for e in &entries {
            assert_eq!(e.get("name").is_some(), named, "{form}: {e}");
        }
        // An order with the line as answered goes through; the certificate shows the same form.
        let mut body = create_body("f.example.com", &plain, contact, dns[0]["dns"].as_str().unwrap(), true);
        body["name"] = json!("f.example.com");
        let a = api.call_ctid(Method::POST, "/certificate", Some(body), form).await;
        assert_eq!(a.status, 200, "{form}: {}", a.body);
        let m = api.wait_poll(a.body["data"][0]["id"].as_i64().unwrap()).await;
        api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
        assert_eq!(m["job"]["status"], "SUCCESS", "{form}: {m}");
        let auth = &m["object"]["data"]["authentication"];
        assert!(
            auth["dns"]
                .as_str()
                .unwrap()
                .starts_with(&format!("f.example.com.{sep}300")),
            "{form}: {auth}"
        );
        assert_eq!(auth.get("name").is_some(), named, "{form}: {auth}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_ssl_is_validated_at_dnsauth_and_rapid_ssl_at_the_name() {
    let api = start().await;
    let contact = api.contact().await;
    let p = api
        .call(
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": csr(&["b.example.com"]), "product": "BASIC_SSL"})),
        )
        .await;
    assert_eq!(p.status, 200, "{}", p.body);
    let methods: Vec<&str> = p.body["data"][0]["authentication"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["DNS", "FILE"]);
    let line = dns_line(&p.body);
    assert!(line.starts_with("_dnsauth.b.example.com.\t300\tIN\tTXT\t\""), "{line}");

    // Without provisioning: a record at the bare name does not count; one at _dnsauth does.
    let (job, line) = api
        .order_product("BASIC_SSL", &["b.example.com"], contact, false, "b1")
        .await;
    let token = line.rsplit('"').nth(1).unwrap();
    api.sim.control().set_txt("b.example.com", token).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let j = api.job(job).await;
    assert_eq!(
        (&j["job"]["status"], &j["job"]["subType"]),
        (&json!("DEFERRED"), &json!("BASIC_SSL"))
    );
    api.sim.control().set_txt("_dnsauth.b.example.com", token).unwrap();
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "SUCCESS", "{m}");
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;
    let auth = &m["object"]["data"]["authentication"];
    assert!(
        auth["dns"].as_str().unwrap().starts_with("_dnsauth.b.example.com."),
        "{auth}"
    );

    // With provisioning, AutoDNS publishes it there itself.
    let (job, _) = api
        .order_product("BASIC_SSL", &["c.example.com"], contact, true, "b2")
        .await;
    assert_eq!(api.wait_poll(job).await["job"]["status"], "SUCCESS");

    let p = api
        .call(
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": csr(&["r.example.com"]), "product": "RAPID_SSL"})),
        )
        .await;
    assert!(dns_line(&p.body).starts_with("r.example.com.\t300"), "{}", p.body);
    let (job, _) = api
        .order_product("RAPID_SSL", &["r.example.com"], contact, true, "r1")
        .await;
    let m = api.wait_poll(job).await;
    assert_eq!(
        (&m["job"]["status"], &m["job"]["subType"]),
        (&json!("SUCCESS"), &json!("RAPID_SSL"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_and_updater_are_the_accounts_own_user_and_context() {
    let api = start_with(autodns_sim::SimConfig {
        accounts: vec![autodns_sim::Account {
            user: "sslmanager".into(),
            password: "pw".into(),
            context: 9,
        }],
        durations: autodns_sim::Durations {
            dcv_interval: Duration::from_millis(30),
            ..Default::default()
        },
        faults: autodns_sim::Faults {
            rate_limit: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let who = ("sslmanager", "pw", 9);
    let me = json!({"user": "sslmanager", "context": 9});
    let c = api
        .call_as(
            who,
            Method::POST,
            "/sslcontact",
            Some(json!({"fname": "J", "lname": "D", "email": "j@example.com", "phone": "+49-1-2"})),
        )
        .await;
    assert_eq!(c.body["data"][0]["owner"], me, "{}", c.body);
    let contact = c.body["data"][0]["id"].as_i64().unwrap();
    let plain = csr(&["nine.example.com"]);
    let p = api
        .call_as(
            who,
            Method::POST,
            "/certificate/_prepareOrder",
            Some(json!({"plain": plain, "product": "QUICKSSLPREMIUM"})),
        )
        .await;
    let a = api
        .call_as(
            who,
            Method::POST,
            "/certificate",
            Some(create_body(
                "nine.example.com",
                &plain,
                contact,
                &dns_line(&p.body),
                true,
            )),
        )
        .await;
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    let mut m = Value::Null;
    for _ in 0..100 {
        m = api.call_as(who, Method::GET, "/poll", None).await.body["data"][0].clone();
        if !m.is_null() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        (&m["owner"], &m["job"]["owner"], &m["job"]["updater"]),
        (&me, &me, &me),
        "{m}"
    );
    let h = api
        .call_as(who, Method::GET, &format!("/job/history/{job}"), None)
        .await;
    assert_eq!(
        (&h.body["data"][0]["job"]["owner"], &h.body["data"][0]["job"]["updater"]),
        (&me, &me)
    );
    let cert = m["object"]["data"]["id"].as_i64().unwrap();
    let i = api
        .call_as(who, Method::GET, &format!("/certificate/{cert}"), None)
        .await;
    assert_eq!((&i.body["data"][0]["owner"], &i.body["data"][0]["updater"]), (&me, &me));
    assert!(!i.body.to_string().contains("\"context\":4"), "{}", i.body);
}
