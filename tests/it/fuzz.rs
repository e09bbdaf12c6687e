//! The short run of certkeeper's fuzzing: property tests over the parsers of untrusted input,
//! with the oracles the cargo-fuzz targets use (`fuzz/src/lib.rs`), and generators that build the
//! structure of each input and then spoil it. `CERTKEEPER_FUZZ_CASES` sets the number of cases
//! per target (the long runs); `fuzz/README.md` has the cargo-fuzz commands.

use std::sync::OnceLock;

use proptest::prelude::*;
use serde_json::{Value, json};

#[path = "../../fuzz/src/lib.rs"]
mod harness;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("CERTKEEPER_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default_cases);
    ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    }
}

/// Spoils bytes: flips, inserts, deletes or truncates at a few places.
fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = base.len().max(1);
    prop::collection::vec((0..4u8, 0..len, any::<u8>()), 0..4).prop_map(move |edits| {
        let mut b = base.clone();
        for (op, at, byte) in edits {
            let at = at.min(b.len());
            match op {
                0 if at < b.len() => b[at] ^= byte | 1,
                1 => b.insert(at, byte),
                2 if at < b.len() => {
                    b.remove(at);
                }
                3 => b.truncate(at),
                _ => {}
            }
        }
        b
    })
}

// ----- 1. the DCV line --------------------------------------------------------------------------

fn host_token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("www.example.com.".to_string()),
        Just("example.com".to_string()),
        Just("_dnsauth.www.example.com.".to_string()),
        Just("WWW.Example.COM.".to_string()),
        Just("_x.example.org.".to_string()),
        Just("*.example.org.".to_string()),
        Just("evil.example.net.".to_string()),
        Just(".".to_string()),
        Just("@".to_string()),
        Just("www..example.com.".to_string()),
        Just(format!("{}.example.com.", "a".repeat(63))),
        Just(format!("{}.example.com.", "a".repeat(64))),
        Just(format!("{}.com.", "a.".repeat(126))),
        prop::collection::vec("[-_a-zA-Z0-9]{0,8}", 1..5).prop_map(|l| l.join(".")),
        prop::collection::vec("[-_a-zA-Z0-9]{1,8}", 1..5).prop_map(|l| format!("{}.", l.join("."))),
    ]
}

fn dcv_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => host_token(),
        2 => prop_oneof![
            Just("300".to_string()),
            Just("0".to_string()),
            Just("2147483647".to_string()),
            Just("2147483648".to_string()),
            Just("4294967296".to_string()),
            Just("99999999999999999999".to_string()),
            "[0-9]{1,12}",
        ],
        2 => prop_oneof![Just("IN"), Just("in"), Just("CH"), Just("TXT"), Just("txt"), Just("CNAME"),
                         Just("cname"), Just("A"), Just("NS"), Just("TYPE16")].prop_map(String::from),
        3 => ("[\"']?", "[-a-zA-Z0-9._~+/=:@%, \"'\\\\$`;()]{0,20}", "[\"']?")
            .prop_map(|(a, v, b)| format!("{a}{v}{b}")),
        1 => Just("\"\"".to_string()),
        1 => Just(format!("\"{}\"", "a".repeat(256))),
        1 => prop_oneof![Just("$INCLUDE"), Just("$ORIGIN"), Just("$TTL"), Just("/etc/shadow"), Just("/dev/zero"),
                         Just("("), Just(")"), Just(";"), Just("\\"), Just("\\\""), Just("\\010")].prop_map(String::from),
        1 => prop_oneof![Just("\n"), Just("\r"), Just("\0"), Just("\u{1b}[2J"), Just("\u{7f}"), Just("ä"),
                         Just("\u{2028}"), Just("\u{feff}")].prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn dcv_line() -> impl Strategy<Value = String> {
    let sep = prop_oneof![6 => Just(" "), 3 => Just("\t"), 1 => Just("  \t"), 1 => Just("\n"), 1 => Just("\r\n")];
    let structured = (
        prop::collection::vec((dcv_token(), sep), 1..8),
        prop_oneof![Just(""), Just(" "), Just("\t"), Just("\n")],
    )
        .prop_map(|(tokens, edge)| {
            let mut line = edge.to_string();
            for (t, s) in tokens {
                line.push_str(&t);
                line.push_str(s);
            }
            line.truncate(line.trim_end_matches(['\n', '\r']).len());
            line
        });
    let real = prop_oneof![
        Just("example.com.\t\t300\tIN\tTXT\t\"201704071405295z34is5g\""),
        Just("_dnsauth.www.example.com. 300 IN TXT \"k=v+/base64==\""),
        Just("_0f1e2d.www.example.com. 3600 IN CNAME dcv.example-ca.com."),
    ]
    .prop_flat_map(|l| mutated(l.as_bytes().to_vec()))
    .prop_map(|b| String::from_utf8_lossy(&b).into_owned());
    prop_oneof![6 => structured, 3 => real, 1 => any::<String>()]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Item 1: prepareOrder's DCV line never panics the reader, and what it accepts is clean.
    #[test]
    fn fuzz_dcv_line(line in dcv_line()) {
        harness::dcv_line(&line);
    }
}

// ----- 2. the API's JSON answers ----------------------------------------------------------------

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(4_297_939_738i64),
            Just(i64::MAX),
            Just(i64::MIN),
            Just(-1),
            Just(0),
            any::<i64>()
        ]
        .prop_map(Value::from),
        Just(json!(1e300)),
        Just(json!(18446744073709551615u64)),
        Just(json!(1.5)),
        prop_oneof![
            Just("2018-12-12T11:05:25.000+0100"),
            Just("9999-12-31T23:59:59.000-2359"),
            Just("0000-01-01T00:00:00.000+2359"),
            Just("2019-09-26T12:00:00Z"),
            Just("DNS"),
            Just("SUCCESS"),
            Just("NOTIFY"),
            Just("ERROR"),
        ]
        .prop_map(Value::from),
        dcv_line().prop_map(Value::String),
        ".{0,30}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-zA-Z]{1,12}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// An object with these fields, each usually of the right kind, sometimes of any kind, sometimes
/// left out.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, good)| {
            prop_oneof![36 => good.prop_map(Some), 1 => json_value().prop_map(Some), 3 => Just(None)]
                .prop_map(move |v| v.map(|v| (k.to_string(), v)))
                .boxed()
        })
        .collect();
    parts
        .prop_map(|kv| Value::Object(kv.into_iter().flatten().collect()))
        .boxed()
}

fn text(options: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![
        6 => Just(Value::from(options[0])),
        6 => prop::sample::select(options).prop_map(Value::from),
        1 => json_leaf(),
    ]
    .boxed()
}

fn id() -> BoxedStrategy<Value> {
    prop_oneof![Just(4_297_939_738i64), Just(1), Just(i64::MAX), Just(-5), any::<i64>()]
        .prop_map(Value::from)
        .boxed()
}

const DATES: &[&str] = &[
    "2018-12-12T11:05:25.000+0100",
    "2019-09-26T12:00:00.000+0200",
    "9999-12-31T23:59:59.000-2359",
    "2019-09-26T12:00:00Z",
    "12/12/2018",
];

fn response_object() -> BoxedStrategy<Value> {
    object(vec![
        ("type", text(&["Certificate", "CertificateData"])),
        ("value", text(&["www.example.com"])),
        ("summary", id()),
        ("data", object(vec![("id", id())])),
    ])
}

fn job_object() -> BoxedStrategy<Value> {
    object(vec![
        ("id", id()),
        ("status", text(&["SUCCESS", "RUNNING", "FAILED", "NEW_ENUM"])),
        ("action", text(&["CREATE", "REISSUE", "RENEW"])),
        ("created", text(DATES)),
        (
            "events",
            prop::collection::vec(object(vec![("ctid", text(&["ck-1", "ck-2"]))]), 0..3)
                .prop_map(Value::Array)
                .boxed(),
        ),
    ])
}

fn data_item() -> BoxedStrategy<Value> {
    let authentication = object(vec![
        ("name", text(&["www.example.com", "example.com", "evil.example.net"])),
        ("method", text(&["DNS", "EMAIL", "FILE"])),
        ("dns", dcv_line().prop_map(Value::String).boxed()),
    ]);
    prop_oneof![
        // prepareOrder's CertificateData
        object(vec![
            ("name", text(&["www.example.com"])),
            (
                "authentication",
                prop::collection::vec(authentication, 0..3)
                    .prop_map(Value::Array)
                    .boxed()
            ),
        ]),
        // Certificate
        object(vec![
            ("id", id()),
            ("name", text(&["www.example.com"])),
            ("serialNumber", text(&["750C", "00"])),
            ("expire", text(DATES)),
            ("payable", text(DATES)),
            ("created", text(DATES)),
            ("reissueRequired", any::<bool>().prop_map(Value::Bool).boxed()),
            (
                "certificationAuthority",
                prop::collection::vec(
                    object(vec![
                        ("caType", text(&["ICA1", "ROOT"])),
                        ("caCertificate", pem_text().prop_map(Value::String).boxed()),
                    ]),
                    0..3
                )
                .prop_map(Value::Array)
                .boxed(),
            ),
        ]),
        // ObjectJob and PollMessage
        object(vec![("job", job_object()), ("object", response_object())]),
        object(vec![
            ("id", id()),
            ("job", job_object()),
            ("ctid", text(&["ck-1"])),
            ("object", response_object()),
        ]),
        json_value().boxed(),
    ]
    .boxed()
}

fn envelope() -> BoxedStrategy<Value> {
    let status = object(vec![
        ("code", text(&["S400104", "N400101", "E400101", "E0500"])),
        ("text", text(&["ok", "started", "invalid"])),
        ("type", text(&["SUCCESS", "NOTIFY", "ERROR", "success", "WARNING"])),
    ]);
    let message = object(vec![
        ("code", text(&["EF1"])),
        ("messageCode", text(&["EF2"])),
        ("text", text(&["csr is required", "\u{1b}[2J"])),
    ]);
    object(vec![
        ("stid", text(&["20240101-stid"])),
        ("ctid", text(&["ck-1"])),
        ("status", status),
        ("object", response_object()),
        (
            "data",
            prop::collection::vec(data_item(), 0..3).prop_map(Value::Array).boxed(),
        ),
        (
            "messages",
            prop::collection::vec(message, 0..3).prop_map(Value::Array).boxed(),
        ),
    ])
}

fn api_body() -> impl Strategy<Value = Vec<u8>> {
    let json = envelope().prop_map(|v| serde_json::to_vec(&v).unwrap());
    prop_oneof![
        5 => json.clone(),
        3 => json.prop_flat_map(mutated),
        1 => prop_oneof![Just(b"".to_vec()), Just(b"<html>bad gateway</html>".to_vec()),
                         Just(b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[".to_vec()),
                         Just(b"{\"status\":{\"type\":\"SUCCESS\"},\"data\":[{\"authentication\":[{\"method\":\"DNS\",\"dns\":\"\\u0000\"}]}]}".to_vec())],
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Item 2: every answer is classified without a panic, and the typed data of an accepted
    /// envelope is read the way each request reads it.
    #[test]
    fn fuzz_api_answer(
        status in prop_oneof![
            4 => prop::sample::select(vec![200u16, 201, 202, 204, 301, 400, 401, 404, 429, 500, 502, 503]),
            1 => 0..1100u16,
        ],
        retry_after in prop::option::of(prop_oneof![Just(u64::MAX), 0..100_000u64]),
        body in api_body(),
    ) {
        harness::api_answer(status, retry_after, &body);
    }
}

// ----- 3. PEM and X.509 deliveries --------------------------------------------------------------

/// A real delivery from the simulator's CA: the leaf and its chain (intermediate, root).
fn delivery() -> &'static (String, Vec<String>) {
    static D: OnceLock<(String, Vec<String>)> = OnceLock::new();
    D.get_or_init(|| {
        let ca = autodns_sim::ca::TestCa::new().unwrap();
        let key = certkeeper::keys::PrivateKey::generate(certkeeper::config::KeyKind::EcdsaP256).unwrap();
        let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let issued = ca
            .issue(&key.public_key_der(), &harness::names()[..2], false, not_after, None)
            .unwrap();
        (issued.leaf_pem, issued.chain.into_iter().map(|(_, p)| p).collect())
    })
}

fn der_of(pem_text: &str) -> Vec<u8> {
    pem::parse(pem_text.trim()).unwrap().into_contents()
}

/// PEM armour around some bytes: any tag, headers, any line length, spoiled markers.
fn armoured(der: impl Strategy<Value = Vec<u8>>) -> impl Strategy<Value = String> {
    (
        der,
        prop_oneof![8 => Just("CERTIFICATE"), 1 => Just("PRIVATE KEY"), 1 => Just("X509 CRL"), 1 => Just("")],
        prop_oneof![4 => Just(64usize), 1 => 1..100usize],
        prop_oneof![8 => Just(""), 1 => Just("Proc-Type: 4,ENCRYPTED\n\n"), 1 => Just("\u{0}\n")],
        prop_oneof![8 => Just("-----END CERTIFICATE-----"), 1 => Just("-----END X-----"), 1 => Just("")],
    )
        .prop_map(|(der, tag, width, headers, end)| {
            let encoded = pem::encode(&pem::Pem::new("X", der));
            let body: String = encoded.lines().filter(|l| !l.starts_with("-----")).collect();
            let mut out = format!("-----BEGIN {tag}-----\n{headers}");
            for chunk in body.as_bytes().chunks(width) {
                out.push_str(std::str::from_utf8(chunk).unwrap());
                out.push('\n');
            }
            let end = if end == "-----END CERTIFICATE-----" {
                format!("-----END {tag}-----")
            } else {
                end.into()
            };
            out.push_str(&end);
            out.push('\n');
            out
        })
}

fn pem_text() -> impl Strategy<Value = String> {
    let (leaf, chain) = delivery();
    let parts: Vec<Vec<u8>> = std::iter::once(leaf).chain(chain).map(|p| der_of(p)).collect();
    prop_oneof![
        3 => prop::sample::select(parts).prop_flat_map(mutated).boxed(),
        1 => prop::collection::vec(any::<u8>(), 0..300).boxed(),
    ]
    .prop_flat_map(|der| armoured(Just(der)))
}

fn bundle() -> impl Strategy<Value = String> {
    let (leaf, chain) = delivery();
    let all: Vec<String> = std::iter::once(leaf.clone()).chain(chain.iter().cloned()).collect();
    let whole = all.concat();
    prop_oneof![
        // The real chain, reordered, cut or with duplicates; some members spoiled.
        3 => prop::collection::vec(
            prop_oneof![3 => prop::sample::select(all.clone()).boxed(), 1 => pem_text().boxed()],
            1..5
        )
        .prop_map(|v| v.concat()),
        2 => mutated(whole.into_bytes()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Item 3: deliveries as PEM text and as DER bytes.
    #[test]
    fn fuzz_x509(text in bundle(), der in prop_oneof![
        3 => prop::sample::select(vec![0usize, 1, 2]).prop_flat_map(|i| {
            let (leaf, chain) = delivery();
            let p = if i == 0 { leaf.clone() } else { chain[i - 1].clone() };
            mutated(der_of(&p))
        }).boxed(),
        1 => prop::collection::vec(any::<u8>(), 0..400).boxed(),
    ]) {
        harness::x509_bundle(&text);
        harness::x509_der(&der);
    }
}

// ----- 4. the TOML configuration ----------------------------------------------------------------

fn toml_value(good: &'static [&'static str]) -> BoxedStrategy<String> {
    prop_oneof![
        40 => Just(good[0].to_string()),
        8 => prop::sample::select(good).prop_map(String::from),
        1 => prop_oneof![
            Just("\"\"".to_string()),
            Just("0".to_string()),
            Just("-1".to_string()),
            Just("9223372036854775807".to_string()),
            Just("inf".to_string()),
            Just("nan".to_string()),
            Just("1e308".to_string()),
            Just("true".to_string()),
            Just("1979-05-27T07:32:00Z".to_string()),
            Just("[]".to_string()),
            Just("{}".to_string()),
            Just("[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]".to_string()),
            Just("\"\\u0000\"".to_string()),
            Just("\"\u{e4}\u{1b}\"".to_string()),
        ],
        1 => "[ -~]{0,16}".prop_map(|s| format!("{s:?}")),
    ]
    .boxed()
}

const DURATIONS: &[&str] = &[
    "\"30s\"",
    "\"250ms\"",
    "\"0s\"",
    "\"1.5m\"",
    "\"400d\"",
    "\"401d\"",
    "\"1e3\"",
    "\"-1s\"",
    "\"d\"",
    "\"\"",
    "\"99999999999999999999d\"",
    "\"nan\"",
    "\".\"",
    "\"2h\"",
    "\"5 min\"",
    "30",
];

fn toml_key(key: &'static str, good: &'static [&'static str]) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        1 => toml_value(good).prop_map(move |v| Some(format!("{key} = {v}"))),
        1 => Just(None),
    ]
    .boxed()
}

/// A key that is usually there.
fn toml_required(key: &'static str, good: &'static [&'static str]) -> BoxedStrategy<Option<String>> {
    prop_oneof![
        19 => toml_value(good).prop_map(move |v| Some(format!("{key} = {v}"))),
        1 => Just(None),
    ]
    .boxed()
}

fn section(header: &'static str, keys: Vec<BoxedStrategy<Option<String>>>) -> BoxedStrategy<String> {
    (keys, prop::option::weighted(0.02, "[a-z_]{1,12} = [0-9]{1,3}"))
        .prop_map(move |(lines, extra)| {
            let mut s = format!("{header}\n");
            for l in lines.into_iter().flatten().chain(extra) {
                s.push_str(&l);
                s.push('\n');
            }
            s
        })
        .boxed()
}

fn certificate_keys() -> Vec<BoxedStrategy<Option<String>>> {
    vec![
        toml_key("product", &["\"QUICKSSLPREMIUM\"", "\"ssl123\"", "\"NOPE\""]),
        toml_key("lifetime_months", &["12", "24", "13"]),
        toml_key("software", &["\"APACHESSL\"", "\"apache\""]),
        toml_key("key", &["\"ecdsa-p256\"", "\"rsa-4096\"", "\"dsa\""]),
        toml_key(
            "admin_contact",
            &[
                "100",
                "0",
                "-5",
                "{ fname = \"A\", lname = \"B\", email = \"a@example.com\", phone = \"+1\" }",
                "{ fname = \"A\" }",
            ],
        ),
        toml_key("technical_contact", &["100", "4294967296"]),
        toml_key("dns", &["\"autodns\"", "\"hook\"", "\"bind\""]),
        toml_key(
            "dns_hook",
            &[
                "[\"/usr/local/bin/dns-hook\"]",
                "[\"hooks/dns.sh\", \"x\"]",
                "[\"\"]",
                "[]",
                "[\"a\\u0000b\"]",
            ],
        ),
        toml_key("reload", &["[\"systemctl\", \"reload\", \"nginx\"]", "[\" \"]"]),
        toml_key(
            "renew_before",
            &["\"33%\"", "\"30d\"", "\"0%\"", "\"100%\"", "\"0s\"", "\"x\"", "\"%\""],
        ),
        toml_key("renew_term", &["true", "false"]),
        toml_key("max_paid_orders", &["1", "0", "10", "11"]),
        toml_key("hook_timeout", DURATIONS),
        toml_key(
            "serve_check",
            &[
                "[\"127.0.0.1:443\"]",
                "[\"[::1]:8443\", \"web1.example.com:443\"]",
                "[]",
                "[\"x\"]",
                "[\"127.0.0.1:0\"]",
            ],
        ),
        toml_key("serve_check_timeout", DURATIONS),
        toml_key("serve_check_interval", DURATIONS),
    ]
}

fn config_text() -> impl Strategy<Value = String> {
    let api = section(
        "[api]",
        vec![
            toml_required(
                "url",
                &[
                    "\"https://api.autodns.com/v1\"",
                    "\"http://127.0.0.1:8080/v1/\"",
                    "\"http://localhost\"",
                    "\"http://127.0.0.1@api.example.com/\"",
                    "\"https://user:pw@api.example.com/\"",
                    "\"ftp://x\"",
                    "\"https://\"",
                ],
            ),
            toml_required("user", &["\"user\"", "\"\""]),
            toml_required("context", &["4", "0", "2147483648"]),
            toml_key(
                "password_file",
                &[
                    "\"pw\"",
                    "\"pw-open\"",
                    "\"pw-empty\"",
                    "\"missing\"",
                    "\".\"",
                    "\"..\"",
                ],
            ),
            toml_key("ca_file", &["\"ca.pem\"", "\"not-a-ca.pem\"", "\"missing.pem\""]),
            toml_key("timeout", DURATIONS),
            toml_key("rate_limit", &["3.0", "0.0", "-1.0", "inf", "nan", "1e308", "3"]),
        ],
    );
    let store = section(
        "[store]",
        vec![
            toml_required("state_dir", &["\"/var/lib/certkeeper\"", "\"state\"", "\"live\""]),
            toml_required("live_dir", &["\"/etc/certkeeper/live\"", "\"live\"", "\"state\""]),
            toml_key("keep_generations", &["3", "1", "2", "100", "101"]),
        ],
    );
    let dns = section(
        "[dns]",
        vec![
            toml_key(
                "resolvers",
                &[
                    "[\"127.0.0.1:5353\", \"192.0.2.53\"]",
                    "[\"::1\", \"[::1]:53\"]",
                    "[\"x\"]",
                ],
            ),
            toml_key("nameservers", &["[\"127.0.0.1\"]", "[\"1.2.3.4:99999\"]"]),
            toml_key("nameserver_port", &["53", "0", "65536"]),
            toml_key("propagation_timeout", DURATIONS),
            toml_key("check_interval", DURATIONS),
        ],
    );
    let order = section(
        "[order]",
        vec![
            toml_key("job_timeout", DURATIONS),
            toml_key("poll_interval", DURATIONS),
            toml_key("poll_interval_max", DURATIONS),
            toml_key("reconcile_grace", DURATIONS),
            toml_key("concurrency", &["8", "0", "256", "257"]),
        ],
    );
    let daemon = section(
        "[daemon]",
        vec![
            toml_key(
                "retry_backoff",
                &["[\"1m\", \"10m\"]", "[]", "[\"0s\"]", "[\"x\", \"1h\"]"],
            ),
            toml_key("term_warning", DURATIONS),
            toml_key(
                "jitter",
                &["\"5%\"", "\"0%\"", "\"50%\"", "\"51%\"", "\"abc\"", "\"30d\""],
            ),
            toml_key(
                "metrics_listen",
                &["\"127.0.0.1:9477\"", "\"[::1]:9477\"", "\"localhost:9477\""],
            ),
            toml_key("on_failure", &["[\"/usr/local/bin/page\"]", "[]"]),
        ],
    );
    let defaults = section("[defaults]", {
        let mut k = certificate_keys();
        k.push(toml_key("name", &["\"www.example.com\""]));
        k
    });
    let certificate = section("[[certificate]]", {
        let mut k = certificate_keys();
        k.push(toml_key(
            "name",
            &[
                "\"www.example.com\"",
                "\"Example.COM\"",
                "\"*.example.com\"",
                "\"a..b\"",
                "\"127.0.0.1\"",
                "\"x\"",
            ],
        ));
        k.push(toml_key(
            "alt_names",
            &[
                "[\"example.com\"]",
                "[\"www.example.com\", \"EXAMPLE.com\"]",
                "[\"-x.com\"]",
            ],
        ));
        k
    });
    let text = (
        api,
        store,
        prop::option::of(dns),
        prop::option::of(order),
        prop::option::of(daemon),
        prop::option::of(defaults),
        prop::collection::vec(certificate, 0..3),
    )
        .prop_map(|(api, store, dns, order, daemon, defaults, certs)| {
            let mut s = String::new();
            for part in [Some(api), Some(store), dns, order, daemon, defaults]
                .into_iter()
                .flatten()
            {
                s.push_str(&part);
            }
            for c in certs {
                s.push_str(&c);
            }
            s
        });
    prop_oneof![
        6 => text.clone(),
        3 => text.prop_flat_map(|t| mutated(t.into_bytes())).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Item 4: configuration text; every error is located, and what is accepted is usable.
    #[test]
    fn fuzz_config(text in config_text(), password_env in any::<bool>()) {
        static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
        let dir = DIR.get_or_init(|| harness::config_dir("it-config"));
        harness::config_text(&text, dir, password_env);
    }
}

// ----- 5. the state files -----------------------------------------------------------------------

fn small() -> BoxedStrategy<Value> {
    prop_oneof![12 => (0..10u32).prop_map(Value::from), 1 => id()].boxed()
}

fn record() -> BoxedStrategy<Value> {
    let line = prop_oneof![
        3 => Just("www.example.com. 300 IN TXT \"abc\"".to_string()),
        1 => dcv_line(),
    ];
    (
        line,
        prop_oneof![Just(300u64), Just(2_147_483_648), Just(4_294_967_295), Just(4_294_967_296), 0..100_000u64],
        text(&["www.example.com.", "evil.example.net.", "WWW.example.com."]),
        text(&["TXT", "CNAME", "A"]),
        text(&["abc", "abc\nupdate add evil. 300 IN A 192.0.2.1"]),
    )
        .prop_map(|(zone_line, ttl, name, kind, value)| {
            json!({ "name": name, "kind": kind, "value": value, "ttl": ttl, "zone_line": zone_line })
        })
        .boxed()
}

fn state_value() -> BoxedStrategy<Value> {
    let step = text(&[
        "planned",
        "keyed",
        "prepared",
        "dns_published",
        "dns_verified",
        "sending",
        "accepted",
        "job_done",
        "downloaded",
        "installed",
        "Installed",
    ]);
    let kind = text(&["create", "reissue", "renew", "Create"]);
    let paid = object(vec![
        ("kind", kind.clone()),
        ("ctid", text(&["ck-1"])),
        ("sent_at", id()),
        ("term", id()),
        ("status", text(&["sent", "accepted", "not_made"])),
        ("job_id", id()),
    ]);
    let order = object(vec![
        ("id", text(&["o-1"])),
        ("kind", kind),
        ("step", step),
        ("started_at", id()),
        ("spki_sha256", text(&["00ff"])),
        (
            "key",
            text(&["-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n"]),
        ),
        ("csr", text(&["-----BEGIN CERTIFICATE REQUEST-----"])),
        (
            "records",
            prop::collection::vec(record(), 0..3).prop_map(Value::Array).boxed(),
        ),
        ("ctid", text(&["ck-1"])),
        ("sent_at", id()),
        ("job_id", id()),
        ("certificate_id", id()),
        ("leaf", text(&["-----BEGIN CERTIFICATE-----"])),
        (
            "chain",
            prop::collection::vec(text(&["x"]), 0..2).prop_map(Value::Array).boxed(),
        ),
        ("generation", small()),
        ("term_end", id()),
    ]);
    object(vec![
        (
            "version",
            prop_oneof![8 => Just(json!(1)), 1 => Just(json!(2)), 1 => Just(json!(-1))].boxed(),
        ),
        ("name", text(&["www.example.com", "../../etc/evil", ""])),
        ("certificate_id", id()),
        ("term_end", id()),
        ("serial", text(&["750C"])),
        ("not_before", id()),
        ("not_after", id()),
        ("generation", small()),
        ("deployed", any::<bool>().prop_map(Value::Bool).boxed()),
        ("pending_deploy", small()),
        ("last_error", text(&["boom", "\u{1b}[2J"])),
        ("last_success", id()),
        ("failures", small()),
        ("last_failure", id()),
        ("retry_after", id()),
        ("paid", prop::collection::vec(paid, 0..3).prop_map(Value::Array).boxed()),
        ("order", order),
    ])
}

fn state_bytes() -> impl Strategy<Value = Vec<u8>> {
    let json = state_value().prop_map(|v| serde_json::to_vec_pretty(&v).unwrap());
    prop_oneof![
        5 => json.clone(),
        3 => json.prop_flat_map(mutated),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// Item 5: state files, read directly and through `Store::load`.
    #[test]
    fn fuzz_state(bytes in state_bytes()) {
        static STORE: OnceLock<certkeeper::store::Store> = OnceLock::new();
        let store = STORE.get_or_init(|| harness::state_store("it-state"));
        harness::state_bytes(&bytes, store);
    }
}

// ----- the harness finds the good paths ---------------------------------------------------------

/// The oracles reach past the first refusal: real inputs are accepted whole.
#[test]
fn the_oracles_accept_real_inputs() {
    let n = harness::names();
    let line = "_dnsauth.www.example.com.\t300\tIN\tTXT\t\"k=v+/base64==\"";
    harness::dcv_line(line);
    assert!(certkeeper::dns::read_dcv_line(line, &n).is_ok());

    let (leaf, chain) = delivery();
    let spki = harness::leaf_spki(leaf).unwrap();
    let info = certkeeper::x509::info(leaf).unwrap();
    let anchors = certkeeper::x509::TrustAnchors::load(chain.last().map(String::as_str), None);
    assert!(certkeeper::x509::verify(leaf, chain, &spki, &info.names, info.not_before, &anchors).is_ok());
    harness::x509_bundle(&format!("{leaf}{}", chain.concat()));

    let env = format!(
        r#"{{"status":{{"code":"S1","text":"ok","type":"SUCCESS"}},"data":[{{"name":"www.example.com","authentication":[{{"method":"DNS","dns":{}}}]}}]}}"#,
        serde_json::to_string(line).unwrap()
    );
    harness::api_answer(200, None, env.as_bytes());
    assert!(certkeeper::api::Client::check(reqwest::StatusCode::OK, None, env.as_bytes()).is_ok());
}

/// The generators reach the accepting paths, not only the first refusal.
#[test]
fn the_generators_reach_what_is_accepted() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let dir = harness::config_dir("it-accepted").join("certkeeper.toml");
    let mut accepted = [0usize; 5];
    for _ in 0..300 {
        let line = dcv_line().new_tree(&mut runner).unwrap().current();
        accepted[0] += usize::from(certkeeper::dns::parse_zone_line(&line).is_ok());
        let body = api_body().new_tree(&mut runner).unwrap().current();
        accepted[1] += usize::from(certkeeper::api::Client::check(reqwest::StatusCode::OK, None, &body).is_ok());
        let text = bundle().new_tree(&mut runner).unwrap().current();
        let leaf = harness::pem_blocks(&text).into_iter().next().unwrap_or_default();
        accepted[2] += usize::from(certkeeper::x509::info(&leaf).is_ok());
        let text = config_text().new_tree(&mut runner).unwrap().current();
        accepted[3] += usize::from(certkeeper::config::parse(&text, &dir, &|_| Some("secret".into())).is_ok());
        let bytes = state_bytes().new_tree(&mut runner).unwrap().current();
        accepted[4] += usize::from(serde_json::from_slice::<certkeeper::store::CertState>(&bytes).is_ok());
    }
    assert!(accepted.iter().all(|n| *n >= 3), "accepted of 300: {accepted:?}");
}

// ----- what fuzzing found -----------------------------------------------------------------------

/// Found by `fuzz_state`: a journal record whose TTL differed from its line passed
/// `DcvRecord::check`, which compared the name, type and value but not the TTL; the DNS hook then
/// got `CERTKEEPER_RECORD_TTL=4294967295` and a canonical line that the reader refuses.
#[test]
fn a_journal_ttl_its_line_does_not_hold_fails_its_check() {
    let bytes = br#"{"version":1,"name":"www.example.com","order":{"id":"o-1","kind":"create","step":"dns_published","started_at":0,
        "records":[{"name":"www.example.com.","kind":"TXT","value":"abc","ttl":4294967295,
        "zone_line":"www.example.com. 300 IN TXT \"abc\""}]}}"#;
    let state: certkeeper::store::CertState = serde_json::from_slice(bytes).unwrap();
    let record = &state.order.unwrap().records[0];
    assert!(record.check(&harness::names()).is_err(), "{}", record.canonical_line());
}
