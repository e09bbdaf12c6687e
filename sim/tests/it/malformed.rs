use proptest::prelude::*;
use reqwest::Method;
use serde_json::Value;

use crate::support::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("plain".to_string()),
                    Just("product".to_string()),
                    Just("csr".to_string()),
                    Just("name".to_string()),
                    Just("lifetime".to_string()),
                    Just("filters".to_string()),
                    Just("authentication".to_string()),
                    Just("adminContact".to_string()),
                    "[a-zA-Z]{1,10}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const ROUTES: &[(&str, &str)] = &[
    ("POST", "/sslcontact"),
    ("POST", "/sslcontact/_search"),
    ("POST", "/certificate/_prepareOrder"),
    ("POST", "/certificate"),
    ("PUT", "/certificate/1000000"),
    ("PUT", "/certificate/1000000/_renew"),
    ("POST", "/certificate/_search"),
    ("POST", "/certificate/1000000/_revoke"),
    ("POST", "/job/_search"),
    ("PUT", "/poll/abc"),
    ("GET", "/certificate/-1"),
    ("DELETE", "/certificate/99999999999999999999"),
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn malformed_requests_always_get_the_error_envelope(route in 0..ROUTES.len(), body in json_value(), raw in prop::option::of(".{0,200}")) {
        let rt = runtime();
        rt.block_on(async {
            let api = api().await;
            let (method, path) = ROUTES[route];
            let url = format!("{}{}", api.sim.api_url, path);
            let mut req = api.http.request(method.parse::<Method>().unwrap(), url)
                .basic_auth("demo", Some("demo-password")).header("X-Domainrobot-Context", "4").header("user-agent", "proptest");
            req = match &raw {
                Some(text) => req.header("content-type", "application/json").body(text.clone()),
                None => req.json(&body),
            };
            let r = req.send().await.expect("the simulator answers every request");
            let status = r.status().as_u16();
            let v: Value = r.json().await.expect("the answer is JSON");
            prop_assert!(status == 200 || (400..500).contains(&status), "HTTP {status} for {method} {path}: {v}");
            // An undocumented search key is answered as the real API does: `status` with only its type.
            let bare = v["messages"][0]["code"] == "EF00022";
            prop_assert!(v["stid"].is_string() && (v["status"]["code"].is_string() || bare), "not the envelope: {v}");
            let kind = v["status"]["type"].as_str().unwrap_or_default();
            prop_assert!(if status == 200 { kind == "SUCCESS" || kind == "NOTIFY" } else { kind == "ERROR" }, "{status} {v}");
            Ok(())
        })?;
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// One simulator for all cases, with a contact and a certificate so that ids resolve.
async fn api() -> &'static Api {
    static API: tokio::sync::OnceCell<Api> = tokio::sync::OnceCell::const_new();
    API.get_or_init(|| async {
        let api = start().await;
        let contact = api.contact().await;
        let (job, _) = api.order(&["prop.example.com"], contact, true, "prop").await;
        api.wait_poll(job).await;
        api
    })
    .await
}
