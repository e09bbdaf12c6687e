use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::TXT;
use hickory_proto::rr::{Name, RData, Record, RecordSet, RecordType};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use reqwest::Method;
use serde_json::json;

use crate::support::*;

fn resolver(server: SocketAddr) -> Resolver<TokioConnectionProvider> {
    let mut c = ResolverConfig::new();
    c.add_name_server(NameServerConfig::new(server, Protocol::Udp));
    let mut o = ResolverOpts::default();
    o.cache_size = 0;
    o.recursion_desired = false;
    Resolver::builder_with_config(c, TokioConnectionProvider::default())
        .with_options(o)
        .build()
}

async fn txt(server: SocketAddr, name: &str) -> Vec<String> {
    match resolver(server).txt_lookup(name).await {
        Ok(l) => l.iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn send(server: SocketAddr, msg: &Message) -> Message {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), server).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_is_authoritative_for_its_zones_only() {
    let api = start().await;
    let dns = api.sim.dns_addr;
    let r = resolver(dns);
    let soa = r.soa_lookup("example.com.").await.unwrap();
    assert_eq!(soa.iter().next().unwrap().mname().to_ascii(), "ns1.example.com.");
    let ns = r.ns_lookup("example.net.").await.unwrap();
    assert_eq!(ns.iter().next().unwrap().0.to_ascii(), "ns1.example.net.");
    let a = r.ipv4_lookup("ns1.example.org.").await.unwrap();
    assert_eq!(a.iter().next().unwrap().0, std::net::Ipv4Addr::LOCALHOST);
    let e = r.txt_lookup("nothing.example.com.").await.unwrap_err();
    assert!(e.is_nx_domain(), "{e}");
    assert!(r.txt_lookup("www.example.invalid.").await.is_err());

    // Records set through the management API, with a CNAME followed inside our zones.
    let (code, _) = api
        .sim_post(
            "/dns",
            json!({"action": "set", "name": "_acme.example.com", "value": "tok"}),
        )
        .await;
    assert_eq!(code, 200);
    api.sim_post(
        "/dns",
        json!({"action": "set", "name": "_dnsauth.example.net", "type": "CNAME", "value": "_acme.example.com"}),
    )
    .await;
    assert_eq!(txt(dns, "_dnsauth.example.net.").await, ["tok"]);
    api.sim_post("/dns", json!({"action": "clear", "name": "_acme.example.com"}))
        .await;
    assert!(txt(dns, "_acme.example.com.").await.is_empty());
    let (code, body) = api
        .sim_post(
            "/dns",
            json!({"action": "set", "name": "x.example.invalid", "value": "v"}),
        )
        .await;
    assert!(
        code == 400
            && body["error"]
                .as_str()
                .unwrap()
                .contains("none of the simulator's zones"),
        "{body}"
    );
    let (code, _) = api
        .sim_post(
            "/dns",
            json!({"action": "set", "name": "a.example.com", "type": "MX", "value": "v"}),
        )
        .await;
    assert_eq!(code, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_records_appear_after_the_propagation_delay_and_gate_the_job() {
    let api = start_with(autodns_sim::SimConfig {
        durations: autodns_sim::Durations {
            propagation_delay: Duration::from_millis(800),
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
    let contact = api.contact().await;
    let (job, _) = api.order(&["slow.example.com"], contact, true, "p1").await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        txt(api.sim.dns_addr, "slow.example.com.").await.is_empty(),
        "visible before the delay"
    );
    // While its record is not served, the job waits as DEFERRED (WF_DNS_AUTH).
    let j = api.call(Method::GET, &format!("/job/{job}"), None).await;
    assert_eq!(
        (
            &j.body["data"][0]["job"]["status"],
            &j.body["data"][0]["job"]["subStatus"]
        ),
        (&json!("DEFERRED"), &json!("WF_DNS_AUTH"))
    );
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "SUCCESS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_without_its_record_fails_after_the_dcv_timeout_and_an_update_makes_it_pass() {
    let api = start_with(autodns_sim::SimConfig {
        durations: autodns_sim::Durations {
            dcv_timeout: Duration::from_millis(600),
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
    let contact = api.contact().await;
    let (job, _) = api.order(&["nodns.example.com"], contact, false, "n1").await;
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "FAILED");
    assert!(
        m["messages"][0]["text"].as_str().unwrap().contains("nodns.example.com"),
        "{m}"
    );
    api.call(Method::PUT, &format!("/poll/{}", m["id"]), None).await;

    // The same, with the record published by an RFC 2136 UPDATE in time.
    let (job, line) = api.order(&["upd.example.com"], contact, false, "n2").await;
    let token = line.rsplit('"').nth(1).unwrap().to_string();
    let zone = Name::from_ascii("example.com.").unwrap();
    let mut set = RecordSet::new(Name::from_ascii("upd.example.com.").unwrap(), RecordType::TXT, 0);
    set.insert(
        Record::from_rdata(
            Name::from_ascii("upd.example.com.").unwrap(),
            300,
            RData::TXT(TXT::new(vec![token.clone()])),
        ),
        0,
    );
    let reply = send(
        api.sim.dns_addr,
        &hickory_proto::op::update_message::append(set.clone(), zone.clone(), false, false),
    )
    .await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert_eq!(
        txt(api.sim.dns_addr, "upd.example.com.").await,
        std::slice::from_ref(&token)
    );
    let m = api.wait_poll(job).await;
    assert_eq!(m["job"]["status"], "SUCCESS");
    let reply = send(
        api.sim.dns_addr,
        &hickory_proto::op::update_message::delete_by_rdata(set, zone, false),
    )
    .await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    assert!(txt(api.sim.dns_addr, "upd.example.com.").await.is_empty());
    // An update for a zone the server does not hold is refused.
    let mut other = RecordSet::new(Name::from_ascii("a.example.invalid.").unwrap(), RecordType::TXT, 0);
    other.insert(
        Record::from_rdata(
            Name::from_ascii("a.example.invalid.").unwrap(),
            300,
            RData::TXT(TXT::new(vec!["x".into()])),
        ),
        0,
    );
    let reply = send(
        api.sim.dns_addr,
        &hickory_proto::op::update_message::append(other, Name::from_ascii("example.invalid.").unwrap(), false, false),
    )
    .await;
    assert_eq!(reply.response_code(), ResponseCode::NotAuth);
}
