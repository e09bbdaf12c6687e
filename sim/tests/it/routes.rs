use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_order_follows_the_documented_flow_and_every_answer_matches_the_spec() {
    let api = start().await;
    let hello = api.call(Method::GET, "/hello", None).await;
    assert_eq!(
        (
            hello.status,
            &hello.body["status"]["code"],
            &hello.body["status"]["type"]
        ),
        (200, &json!("S0000"), &json!("SUCCESS"))
    );
    assert_schema("JsonResponseDataVoid", &hello.body);

    // Contacts: create, info, search.
    let c = api
        .call(Method::POST, "/sslcontact", Some(json!({"fname": "John", "lname": "Doe", "email": "john.doe@example.com", "phone": "+49-123-12345", "address": "123 Main Street", "country": "DE"})))
        .await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(c.body["status"]["code"], "S400201");
    assert_eq!(c.body["object"], json!({"type": "contact", "value": "100"}));
    // The create answer echoes the address as sent (a string, as the help page shows); the
    // contact keeps it as the spec's list.
    assert_eq!(c.body["data"][0]["address"], json!("123 Main Street"));
    assert_schema("JsonResponseDataSslContact", &c.body);
    let contact = c.body["data"][0]["id"].as_i64().unwrap();
    let info = api.call(Method::GET, &format!("/sslcontact/{contact}"), None).await;
    assert_eq!(
        (
            info.status,
            &info.body["data"][0]["email"],
            &info.body["data"][0]["address"]
        ),
        (200, &json!("john.doe@example.com"), &json!(["123 Main Street"]))
    );
    assert_schema("JsonResponseDataSslContact", &info.body);
    let found = api
        .call(
            Method::POST,
            "/sslcontact/_search",
            Some(json!({"filters": [{"key": "email", "value": "%@example.com", "operator": "LIKE"}]})),
        )
        .await;
    assert_eq!((found.status, found.body["object"]["summary"].as_i64()), (200, Some(1)));
    assert_eq!(found.body["object"], json!({"type": "SslContact", "summary": 1}));
    assert_schema("JsonResponseDataSslContact", &found.body);

    // prepareOrder, under both spellings.
    let csr1 = csr(&["www.example.com", "example.com"]);
    for path in ["/certificate/_prepareOrder", "/certificate/prepareOrder"] {
        let p = api
            .call(
                Method::POST,
                path,
                Some(json!({"plain": csr1, "product": "QUICKSSLPREMIUM"})),
            )
            .await;
        assert_eq!(
            (p.status, &p.body["status"]["code"]),
            (200, &json!("S400110")),
            "{}",
            p.body
        );
        assert_schema("JsonResponseDataCertificateData", &p.body);
        let d = &p.body["data"][0];
        assert_eq!(
            (&d["name"], &d["keySize"], &d["algorithm"], &d["ecCurve"]),
            (
                &json!("www.example.com"),
                &json!(256),
                &json!("ECC"),
                &json!("PRIME_256_V1")
            )
        );
        let methods: Vec<&str> = d["authentication"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["EMAIL", "DNS", "DNS", "FILE", "FILE"]);
        assert!(
            d["plain"].as_str().unwrap().contains("\n"),
            "the CSR comes back as PEM with line breaks"
        );
    }
    let p = api.prepare(&csr1).await;
    let dns = dns_line(&p.body);
    assert!(regex_like_zone_line(&dns, "www.example.com."), "{dns}");

    // create: NOTIFY with the job id (beyond i32), the ctid echoed.
    let create = api
        .call_ctid(
            Method::POST,
            "/certificate",
            Some(create_body("www.example.com", &csr1, contact, &dns, true)),
            "ctid-create-1",
        )
        .await;
    assert_eq!(create.status, 200, "{}", create.body);
    assert_eq!(
        create.body["status"],
        json!({"code": "N400101", "text": "Certificate order was started successfully.", "type": "NOTIFY"})
    );
    assert_eq!(
        create.body["object"],
        json!({"type": "Certificate", "value": "www.example.com"})
    );
    assert_eq!(create.body["ctid"], "ctid-create-1");
    assert_schema("JsonResponseDataJob", &create.body);
    let job = create.body["data"][0]["id"].as_i64().unwrap();
    assert!(job > i64::from(i32::MAX));

    // The job completes once the provisioned record is served; the poll message says so.
    let msg = api.wait_poll(job).await;
    assert_eq!(
        (
            &msg["job"]["status"],
            &msg["job"]["action"],
            &msg["job"]["subType"],
            &msg["job"]["type"]
        ),
        (
            &json!("SUCCESS"),
            &json!("create"),
            &json!("QUICKSSLPREMIUM"),
            &json!("ssl")
        )
    );
    assert_eq!(
        (&msg["object"]["type"], &msg["object"]["value"], &msg["ctid"]),
        (
            &json!("Certificate"),
            &json!("www.example.com"),
            &json!("ctid-create-1")
        )
    );
    let cert_id = msg["object"]["data"]["id"].as_i64().unwrap();
    let poll = api.call(Method::GET, "/poll", None).await;
    assert_eq!(poll.body["object"]["summary"], 1);
    assert_eq!(poll.body["status"]["code"], "S0905");
    assert_schema("JsonResponseDataPollMessage", &poll.body);
    let msg_id = msg["id"].as_i64().unwrap();
    let confirm = api.call(Method::PUT, &format!("/poll/{msg_id}"), None).await;
    assert_eq!(
        (
            confirm.status,
            &confirm.body["status"]["code"],
            &confirm.body["object"]["value"]
        ),
        (200, &json!("S0906"), &json!(msg_id.to_string()))
    );
    assert_schema("JsonResponseDataJsonNoData", &confirm.body);
    let empty = api.call(Method::GET, "/poll", None).await;
    assert_eq!(
        (empty.body["object"]["summary"].as_i64(), empty.body.get("data")),
        (Some(0), None)
    );
    assert_schema("JsonResponseDataPollMessage", &empty.body);

    // info: leaf, chain (INTERMEDIATE, ROOT), expiry within the term.
    let info = api.call(Method::GET, &format!("/certificate/{cert_id}"), None).await;
    assert_eq!((info.status, &info.body["status"]["code"]), (200, &json!("S400104")));
    assert_schema("JsonResponseDataCertificate", &info.body);
    let c = &info.body["data"][0];
    assert!(c["server"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(c["adminContact"]["email"], "john.doe@example.com");
    assert_eq!(
        (&c["owner"], &c["updater"]),
        (
            &json!({"user": "demo", "context": 4}),
            &json!({"user": "demo", "context": 4})
        )
    );
    let types: Vec<&str> = c["certificationAuthority"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["caType"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["INTERMEDIATE", "ROOT"]);
    assert_eq!(
        c["certificationAuthority"][1]["caCertificate"].as_str().unwrap(),
        api.sim.ca_pem
    );
    // payable, multiyear and reissueRequired only in the 2022 form.
    assert!(c.get("payable").is_none() && c.get("multiyear").is_none(), "{c}");
    api.sim_post("/faults", json!({"rate_limit": 0, "payable": true})).await;
    let info = api.call(Method::GET, &format!("/certificate/{cert_id}"), None).await;
    assert_schema("JsonResponseDataCertificate", &info.body);
    let c = &info.body["data"][0];
    let expire = autodns_sim::time::parse(c["expire"].as_str().unwrap()).unwrap();
    let payable = autodns_sim::time::parse(c["payable"].as_str().unwrap()).unwrap();
    assert!(expire <= payable && (expire - time::OffsetDateTime::now_utc()).whole_days() >= 198);
    assert_eq!((&c["multiyear"], &c["reissueRequired"]), (&json!(false), &json!(true)));
    let serial1 = c["serialNumber"].as_str().unwrap().to_string();

    // search; the ended job has moved to the history.
    let s = api
        .call(
            Method::POST,
            "/certificate/_search",
            Some(json!({"filters": [{"key": "name", "value": "www.example.com", "operator": "EQUAL"}]})),
        )
        .await;
    assert_eq!((s.status, s.body["object"]["summary"].as_i64()), (200, Some(1)));
    assert_schema("JsonResponseDataCertificate", &s.body);
    let gone = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (gone.status, &gone.body["messages"][0]["code"]),
        (404, &json!("EF300101")),
        "{}",
        gone.body
    );
    let j = api.call(Method::GET, &format!("/job/history/{job}"), None).await;
    assert_eq!(
        (
            j.status,
            &j.body["status"]["code"],
            &j.body["data"][0]["job"]["status"],
            &j.body["data"][0]["object"]["data"]["id"]
        ),
        (200, &json!("S300134"), &json!("SUCCESS"), &json!(cert_id))
    );
    assert_eq!(j.body["object"], json!({"type": "ObjectJob", "value": job.to_string()}));
    assert_schema("JsonResponseDataObjectJob", &j.body);
    let query = json!({"filters": [{"key": "object", "value": "www.example.com"}, {"key": "created", "value": "2020-01-01T00:00:00.000+0000", "operator": "GREATER", "link": "AND"}]});
    let running = api.call(Method::POST, "/job/_search", Some(query.clone())).await;
    assert_eq!(running.body["object"], json!({"type": "ObjectJob", "summary": 0}));
    let js = api.call(Method::POST, "/job/history/_search", Some(query)).await;
    assert_eq!(
        (js.body["object"]["summary"].as_i64(), &js.body["data"][0]["job"]["id"]),
        (Some(1), &json!(job))
    );
    assert!(
        !js.body.to_string().contains("ctid-create-1"),
        "no ctid in jobs: {}",
        js.body
    );
    assert_schema("JsonResponseDataObjectJob", &js.body);

    // reissue: free, new serial, the old one in histories.
    let csr2 = csr(&["www.example.com"]);
    let p2 = api.call(Method::POST, "/certificate/_prepareOrder", Some(json!({"plain": csr2, "product": "QUICKSSLPREMIUM", "businessCase": "REISSUE", "certificate": {"id": cert_id}}))).await;
    let re = api
        .call_ctid(
            Method::PUT,
            &format!("/certificate/{cert_id}"),
            Some(create_body(
                "www.example.com",
                &csr2,
                contact,
                &dns_line(&p2.body),
                true,
            )),
            "ctid-reissue",
        )
        .await;
    assert_eq!(
        (re.status, &re.body["status"]["code"]),
        (200, &json!("N400102")),
        "{}",
        re.body
    );
    assert_schema("JsonResponseDataJob", &re.body);
    let rjob = re.body["data"][0]["id"].as_i64().unwrap();
    let m = api.wait_poll(rjob).await;
    assert_eq!(
        (&m["job"]["status"], &m["job"]["action"]),
        (&json!("SUCCESS"), &json!("reissue"))
    );
    let info2 = api.call(Method::GET, &format!("/certificate/{cert_id}"), None).await;
    let c2 = &info2.body["data"][0];
    assert_ne!(c2["serialNumber"].as_str().unwrap(), serial1);
    assert_eq!(c2["histories"][0]["serialNumber"], serial1);
    assert_schema("JsonResponseDataCertificate", &info2.body);

    // revoke the old serial, then delete.
    let rv = api
        .call(
            Method::POST,
            &format!("/certificate/{cert_id}/_revoke"),
            Some(json!({"serialNumber": serial1})),
        )
        .await;
    assert_eq!(
        (rv.status, &rv.body["status"]["code"]),
        (200, &json!("N4001031")),
        "{}",
        rv.body
    );
    assert_schema("JsonResponseDataJob", &rv.body);
    let info3 = api.call(Method::GET, &format!("/certificate/{cert_id}"), None).await;
    assert!(info3.body["data"][0]["histories"][0]["revoked"].is_string());
    let del = api.call(Method::DELETE, &format!("/certificate/{cert_id}"), None).await;
    assert_eq!((del.status, &del.body["status"]["code"]), (200, &json!("N400103")));
    assert_schema("JsonResponseDataJob", &del.body);
    assert_eq!(
        api.call(Method::GET, &format!("/certificate/{cert_id}"), None)
            .await
            .status,
        404
    );

    // The ledger recorded the create (charged), the reissue (free), with their ctids, and the
    // revoke (free), with the serial it named.
    let ledger = api.sim_get("/ledger").await;
    let kinds: Vec<(&str, bool, Option<&str>, Option<&str>)> = ledger
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["kind"].as_str().unwrap(),
                l["charged"].as_bool().unwrap(),
                l["ctid"].as_str(),
                l["serial"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("create", true, Some("ctid-create-1"), None),
            ("reissue", false, Some("ctid-reissue"), None),
            ("revoke", false, None, Some(serial1.as_str())),
        ]
    );
}

fn regex_like_zone_line(line: &str, name: &str) -> bool {
    let fields: Vec<&str> = line.split('\t').collect();
    fields.len() == 5
        && fields[0] == name
        && fields[1] == "300"
        && fields[2] == "IN"
        && fields[3] == "TXT"
        && fields[4].starts_with('"')
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_term_limits_reissues_and_renew_buys_the_next_term() {
    let api = start_with(autodns_sim::SimConfig {
        durations: autodns_sim::Durations {
            month: std::time::Duration::from_millis(250),
            cert_validity: std::time::Duration::from_secs(1),
            dcv_interval: std::time::Duration::from_millis(20),
            ..Default::default()
        },
        // The term end is read from `payable` (the 2022 form).
        faults: autodns_sim::Faults {
            rate_limit: 0.0,
            payable: true,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let contact = api.contact().await;
    let (job, _) = api.order(&["term.example.com"], contact, true, "t1").await;
    let m = api.wait_poll(job).await;
    let id = m["object"]["data"]["id"].as_i64().unwrap();
    let c = api.call(Method::GET, &format!("/certificate/{id}"), None).await.body["data"][0].clone();
    let expire = autodns_sim::time::parse(c["expire"].as_str().unwrap()).unwrap();
    let payable = autodns_sim::time::parse(c["payable"].as_str().unwrap()).unwrap();
    // Validity is capped at --cert-validity (1 s) within a 12 x 250 ms = 3 s term.
    assert!(expire < payable && (payable - expire).as_seconds_f64() > 1.0, "{c}");
    assert_eq!(c["reissueRequired"], true);

    // Renewing is refused until the term is within 3 months of its end.
    let early = api
        .call(Method::PUT, &format!("/certificate/{id}/_renew"), Some(json!({})))
        .await;
    assert_eq!(
        (early.status, &early.body["messages"][0]["code"]),
        (400, &json!("EF4001012")),
        "{}",
        early.body
    );

    // After the term, a reissue is refused; renew buys the next term.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    let csr2 = csr(&["term.example.com"]);
    let late = api
        .call(
            Method::PUT,
            &format!("/certificate/{id}"),
            Some(json!({"csr": csr2, "authentication": {"method": "DNS", "provisioning": true}})),
        )
        .await;
    assert_eq!(
        (late.status, &late.body["messages"][0]["code"]),
        (400, &json!("EF4001022")),
        "{}",
        late.body
    );
    let renew = api
        .call_ctid(
            Method::PUT,
            &format!("/certificate/{id}/_renew"),
            Some(json!({})),
            "renew-1",
        )
        .await;
    assert_eq!(
        (renew.status, &renew.body["status"]["code"]),
        (200, &json!("N400106")),
        "{}",
        renew.body
    );
    let m = api.wait_poll(renew.body["data"][0]["id"].as_i64().unwrap()).await;
    assert_eq!(
        (&m["job"]["status"], &m["job"]["action"]),
        (&json!("SUCCESS"), &json!("renew"))
    );
    let c2 = api.call(Method::GET, &format!("/certificate/{id}"), None).await.body["data"][0].clone();
    let payable2 = autodns_sim::time::parse(c2["payable"].as_str().unwrap()).unwrap();
    assert!(
        payable2 > time::OffsetDateTime::now_utc() + time::Duration::seconds(2),
        "{c2}"
    );
    let charged = api
        .sim_get("/ledger")
        .await
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["charged"] == true)
        .count();
    assert_eq!(charged, 2, "create and renew are charged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smime_order_issues_for_the_mailbox_without_dns() {
    let api = start().await;
    let contact = api.contact().await;
    let a = api
        .call(
            Method::POST,
            "/certificate",
            Some(json!({"certificateType": "MAIL", "product": "GLOBALSIGN_PERSONALSIGN_1", "lifetime": {"unit": "MONTH", "period": 12},
                "name": "joe.sample@example.com", "password": "secret", "firstname": "Joe", "lastname": "Sample",
                "organizationUnitName": "Development", "hasCsr": false, "adminContact": {"id": contact}})),
        )
        .await;
    assert_eq!(
        (a.status, &a.body["status"]["code"]),
        (200, &json!("N400101")),
        "{}",
        a.body
    );
    // The approval mail waits for its reader: the job stays RUNNING (WF_EMAIL_AUTH), nothing issued.
    let job = a.body["data"][0]["id"].as_i64().unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let waiting = api.job(job).await;
    assert_eq!(
        (&waiting["job"]["status"], &waiting["job"]["subStatus"]),
        (&json!("RUNNING"), &json!("WF_EMAIL_AUTH")),
        "{waiting}"
    );
    let (status, _) = api
        .sim_post(&format!("/jobs/{job}"), json!({"action": "approve"}))
        .await;
    assert_eq!(status, 200);
    let m = api.wait_poll(job).await;
    let id = m["object"]["data"]["id"].as_i64().unwrap();
    let c = api.call(Method::GET, &format!("/certificate/{id}"), None).await;
    assert_eq!(
        (&c.body["data"][0]["certificateType"], &c.body["data"][0]["name"]),
        (&json!("MAIL"), &json!("joe.sample@example.com"))
    );
    assert_schema("JsonResponseDataCertificate", &c.body);
    // The request log never holds the download password.
    let log = api.sim_get("/requests").await;
    assert!(!log.to_string().contains("secret"), "{log}");
    // An S/MIME order without the personal fields is refused, naming the field.
    let bad = api.call(Method::POST, "/certificate", Some(json!({"certificateType": "MAIL", "product": "GLOBALSIGN_PERSONALSIGN_1", "lifetime": {"unit": "MONTH", "period": 12}, "name": "joe@example.com", "adminContact": {"id": contact}}))).await;
    assert_eq!(
        (bad.status, &bad.body["messages"][0]["objects"][0]["value"]),
        (400, &json!("password")),
        "{}",
        bad.body
    );
}

/// The root CA file is written as a new file renamed into place: a link planted at its path is
/// replaced, and what it pointed at is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_ca_file_is_never_written_through_a_link() {
    let dir = std::env::temp_dir().join(format!("autodns-sim-test-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("root.pem");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let api = start_with(autodns_sim::SimConfig {
        ca_file: Some(link.clone()),
        ..autodns_sim::SimConfig::default()
    })
    .await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read_to_string(&link).unwrap(), api.sim.ca_pem);
    drop(api);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `tls_wrong_host` serves a certificate for another name only: a client that checks the host
/// (the simulator's own root trusted) cannot connect, and one that does not would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_for_another_host_is_served_on_request() {
    let api = start_with(autodns_sim::SimConfig {
        tls_wrong_host: Some("api.example.net".into()),
        ..autodns_sim::SimConfig::default()
    })
    .await;
    let Err(err) = api.try_call(Method::GET, "/hello", None).await else {
        panic!("connected to a server whose certificate names another host");
    };
    assert!(err.is_connect(), "{err:?}");
    let api = start().await;
    assert!(api.try_call(Method::GET, "/hello", None).await.is_ok());
}
