//! The poll queue as the real API keeps it: one per API user, its head another client's message
//! that nobody confirms, jobs that wait (DEFERRED) before they end, finished jobs gone from
//! `GET /job/{id}` and found under `GET /job/history/{id}`; and one reader for all orders.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autodns_sim::{Durations, Faults, SimConfig};
use serde_json::{Value, json};

use crate::support::*;

/// A simulator over plain http (on loopback), so that a [`Front`] can stand before it.
async fn plain_sim(tag: &str, faults: Faults, job_delay: Duration) -> TestEnv {
    TestEnv::start_sim(
        tag,
        SimConfig {
            tls: false,
            faults: Faults {
                rate_limit: 0.0,
                ..faults
            },
            durations: Durations {
                job_delay,
                ..Durations::default()
            },
            ..SimConfig::default()
        },
    )
    .await
}

/// The requests the simulator answered, as `METHOD /path`.
fn requests(env: &TestEnv) -> Vec<String> {
    env.sim
        .control()
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn count(calls: &[String], prefix: &str) -> usize {
    calls.iter().filter(|c| c.starts_with(prefix)).count()
}

/// Another client's message heads the queue and stays (nobody confirms it), with the shipped
/// poll settings (2 s, doubling to 60 s): the order follows its job to the end through
/// `GET /job` within the first minute, and then a reissue does too; certkeeper never confirms the
/// foreign message, nor any other, since it never sees one of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_message_heading_the_queue_neither_stalls_an_order_nor_is_confirmed() {
    let env = plain_sim("poll-foreign", Faults::default(), Duration::ZERO).await;
    let front = Front::start(&env, Twist::Foreign).await;
    let name = "www.example.com";
    env.write_config(&[Cert::autodns(name)], "");
    env.use_shipped_settings();
    through(&env, &front);
    for args in [&["run", "--once"][..], &["--renew-now", name][..]] {
        let started = Instant::now();
        let out = env.run(args, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            started.elapsed() < Duration::from_secs(45),
            "{args:?} took {:?}",
            started.elapsed()
        );
        env.assert_installed(name);
    }
    assert_eq!(env.reissues(name), 1);
    let log = front.log();
    assert_eq!(count(&log, "PUT /v1/poll"), 0, "{log:?}");
    assert!(count(&log, "GET /v1/poll") >= 4, "{log:?}");
}

/// What the [`Front`] changes in the simulator's answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Twist {
    /// Another client's message heads the queue for good.
    Foreign,
    /// Each job answers DEFERRED (subStatus WF_DNS_AUTH) while it runs, and a DEFERRED poll
    /// message about it heads the queue from its order's answer on, until it is confirmed.
    Deferred,
    /// As [`Twist::Foreign`], and a finished job is unknown at `GET /job/{id}` (404, EF300101)
    /// and known under `GET /job/history/{id}`, as on the real API.
    History,
}

/// The foreign message of [`Twist::Foreign`] and [`Twist::History`].
const FOREIGN: i64 = 8_000_001;

#[derive(Default)]
struct Seen {
    /// DEFERRED messages queued and not yet confirmed: (message id, job id, ctid).
    deferred: Vec<(i64, i64, String)>,
    next_id: i64,
    /// Messages of the front's that certkeeper confirmed.
    confirmed: Vec<i64>,
    /// Every request, as `METHOD /path STATUS`.
    log: Vec<String>,
}

/// A loopback front for the simulator (plain http, one request per connection): forwards
/// every request, changing the answers as its [`Twist`] says.
struct Front {
    url: String,
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Front {
    async fn start(env: &TestEnv, twist: Twist) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let sim = env.sim.api_url.trim_end_matches("/v1").to_string();
        let seen = Arc::new(Mutex::new(Seen {
            next_id: 7_000_001,
            ..Seen::default()
        }));
        let http = reqwest::Client::new();
        let shared = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sim, http, seen) = (sim.clone(), http.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), serve(stream, &sim, &http, &seen, twist)).await;
                });
            }
        });
        Self { url, seen, task }
    }

    fn log(&self) -> Vec<String> {
        self.seen.lock().unwrap().log.clone()
    }

    fn confirmed(&self) -> Vec<i64> {
        self.seen.lock().unwrap().confirmed.clone()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Points the test config at the front instead of the simulator.
fn through(env: &TestEnv, front: &Front) {
    let text = std::fs::read_to_string(env.config_path()).unwrap();
    std::fs::write(env.config_path(), text.replace(&env.sim.api_url, &front.url)).unwrap();
}

async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Request> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 1 << 20 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Request {
        method,
        path,
        headers,
        body,
    })
}

/// Sends `req` on to the simulator, at `path`.
async fn forward(sim: &str, http: &reqwest::Client, req: &Request, path: &str) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap();
    let mut out = http.request(method, format!("{sim}{path}"));
    for (k, v) in &req.headers {
        if [
            "authorization",
            "x-domainrobot-context",
            "x-domainrobot-ctid",
            "user-agent",
            "content-type",
            "accept",
        ]
        .contains(&k.as_str())
        {
            out = out.header(k.as_str(), v.as_str());
        }
    }
    if !req.body.is_empty() {
        out = out.body(req.body.clone());
    }
    let answer = out.send().await.unwrap();
    let status = answer.status().as_u16();
    let body = answer.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn envelope(code: &str, object: Value, data: Vec<Value>) -> Value {
    json!({ "stid": "front", "status": { "code": code, "text": "ok", "type": "SUCCESS" }, "object": object, "data": data })
}

fn job_unknown(id: i64) -> (u16, Value) {
    (
        404,
        json!({ "stid": "front", "status": { "code": "E300114", "text": "Job could not be found.", "type": "ERROR" },
            "messages": [{ "code": "EF300101", "text": "Der Auftrag wurde nicht gefunden.", "status": "ERROR",
                "objects": [{ "type": "job", "value": id.to_string() }] }] }),
    )
}

fn final_status(body: &Value) -> bool {
    matches!(
        body["data"][0]["job"]["status"].as_str(),
        Some("SUCCESS" | "FAILED" | "CANCELED")
    )
}

fn poll_message(id: i64, job: i64, ctid: &str, status: &str, name: &str) -> Value {
    json!({ "id": id, "ctid": ctid, "stid": "front",
        "job": { "id": job, "status": status, "subStatus": "WF_DNS_AUTH", "type": "ssl", "subType": "QUICKSSLPREMIUM", "action": "create" },
        "object": { "type": "Certificate", "value": name } })
}

async fn serve(mut stream: tokio::net::TcpStream, sim: &str, http: &reqwest::Client, seen: &Mutex<Seen>, twist: Twist) {
    use tokio::io::AsyncWriteExt;
    let Some(req) = read_request(&mut stream).await else {
        return;
    };
    let segs: Vec<String> = req
        .path
        .trim_start_matches("/v1/")
        .split('/')
        .map(str::to_string)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    let (status, body) = match (twist, req.method.as_str(), segs.as_slice()) {
        (Twist::Deferred, "GET", ["poll"]) => {
            let first = seen.lock().unwrap().deferred.first().cloned();
            match first {
                Some((id, job, ctid)) => (
                    200,
                    envelope(
                        "S0905",
                        json!({ "type": "message", "value": id.to_string(), "summary": 2 }),
                        vec![poll_message(id, job, &ctid, "DEFERRED", "example.com")],
                    ),
                ),
                None => forward(sim, http, &req, &req.path).await,
            }
        }
        (Twist::Deferred, "PUT", ["poll", id])
            if seen.lock().unwrap().deferred.iter().any(|d| d.0.to_string() == *id) =>
        {
            let mut s = seen.lock().unwrap();
            s.deferred.retain(|d| d.0.to_string() != *id);
            s.confirmed.push(id.parse().unwrap());
            (
                200,
                envelope("S0906", json!({ "type": "message", "value": id }), vec![]),
            )
        }
        (Twist::Deferred, "GET", ["job", _]) => {
            let (status, mut body) = forward(sim, http, &req, &req.path).await;
            if body["data"][0]["job"]["status"] == "RUNNING" {
                body["data"][0]["job"]["status"] = json!("DEFERRED");
                body["data"][0]["job"]["subStatus"] = json!("WF_DNS_AUTH");
            }
            (status, body)
        }
        (Twist::Deferred, "POST" | "PUT", ["certificate", ..]) if !segs.contains(&"_prepareOrder") => {
            let (status, body) = forward(sim, http, &req, &req.path).await;
            if let (200, Some(job)) = (status, body["data"][0]["id"].as_i64()) {
                let ctid = req
                    .headers
                    .iter()
                    .find(|(k, _)| k == "x-domainrobot-ctid")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default();
                let mut s = seen.lock().unwrap();
                let id = s.next_id;
                s.next_id += 1;
                s.deferred.push((id, job, ctid));
            }
            (status, body)
        }
        (Twist::Foreign | Twist::History, "GET", ["poll"]) => (
            200,
            envelope(
                "S0905",
                json!({ "type": "message", "value": FOREIGN.to_string(), "summary": 3 }),
                vec![poll_message(
                    FOREIGN,
                    888_888_888,
                    "another-client",
                    "SUCCESS",
                    "other.example.org",
                )],
            ),
        ),
        (Twist::History, "GET", ["job", id]) => {
            let (status, body) = forward(sim, http, &req, &req.path).await;
            if status == 200 && final_status(&body) {
                job_unknown(id.parse().unwrap_or_default())
            } else {
                (status, body)
            }
        }
        (Twist::History, "GET", ["job", "history", id]) => {
            let (status, body) = forward(sim, http, &req, &req.path).await;
            if status == 200 {
                (status, body)
            } else {
                // A simulator without the history route: its job route holds finished jobs.
                let (status, mut body) = forward(sim, http, &req, &format!("/v1/job/{id}")).await;
                if status == 200 && final_status(&body) {
                    body["status"]["code"] = json!("S300134");
                    (status, body)
                } else {
                    job_unknown(id.parse().unwrap_or_default())
                }
            }
        }
        _ => forward(sim, http, &req, &req.path).await,
    };
    seen.lock()
        .unwrap()
        .log
        .push(format!("{} {} {status}", req.method, req.path));
    let body = body.to_string();
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

/// A job that answers DEFERRED (the CA waits for the DNS record) before it ends is followed to
/// the end, through the poll queue: the DEFERRED message about it is noted and confirmed (it is
/// ours), and the final one is read after it. certkeeper used to read the DEFERRED message at
/// the head on every round, never confirm it and never look further, until the job timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_deferred_first_and_successful_then_is_followed_to_the_end() {
    let env = plain_sim("poll-deferred", Faults::default(), Duration::from_secs(2)).await;
    let front = Front::start(&env, Twist::Deferred).await;
    let names = ["www.example.com", "shop.example.net"];
    env.write_config(&[Cert::autodns(names[0]), Cert::hook(names[1])], "");
    through(&env, &front);
    let out = env
        .run(&["run", "--once"], &[("CERTKEEPER_LOG", "info,certkeeper=debug")])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in names {
        env.assert_installed(name);
        assert_eq!(env.paid(name), 1);
    }
    assert!(stderr(&out).contains("DEFERRED"), "{}", stderr(&out));
    let confirmed = front.confirmed();
    assert_eq!(confirmed.len(), 2, "the DEFERRED messages confirmed: {confirmed:?}");
    // The messages that ended the jobs were confirmed too, and nothing else is queued.
    let calls = requests(&env);
    assert_eq!(count(&calls, "PUT /v1/poll/"), 2, "{calls:?}");
    assert!(env.client().poll().await.unwrap().is_none());
}

/// A finished job is unknown at `GET /job/{id}` (404, EF300101) and known under
/// `GET /job/history/{id}`, while another client's message heads the queue for good: each
/// order follows its job to the end through its history, and certkeeper confirms nothing.
/// certkeeper used to ask `GET /job/{id}` until the job timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_job_gone_from_the_job_route_is_followed_through_its_history() {
    let env = plain_sim("poll-history", Faults::default(), Duration::ZERO).await;
    let front = Front::start(&env, Twist::History).await;
    let names = ["www.example.com", "shop.example.net"];
    env.write_config(&[Cert::autodns(names[0]), Cert::hook(names[1])], "");
    through(&env, &front);
    let out = env
        .run(&["run", "--once"], &[("CERTKEEPER_LOG", "info,certkeeper=debug")])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in names {
        env.assert_installed(name);
        assert_eq!(env.paid(name), 1);
    }
    let log = front.log();
    assert!(
        count(&log, "GET /v1/job/history/") >= 2,
        "the history was not asked: {log:?}"
    );
    assert!(
        log.iter().any(|l| l.starts_with("GET /v1/job/") && l.ends_with(" 404")),
        "{log:?}"
    );
    assert_eq!(count(&log, "PUT /v1/poll"), 0, "a message was confirmed: {log:?}");
    // The reissue too (its certificate id known from the journal).
    let out = env.run(&["--renew-now", names[0]], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(env.reissues(names[0]), 1);
    assert_eq!(count(&front.log(), "PUT /v1/poll"), 0);
}

/// Eight orders in flight (at the API's 3 requests per second), their jobs running for 2 s: one
/// reader reads the queue for all of them, one read per message (and a few that find it empty),
/// each message is confirmed, and no order asks for its job. Orders polling on their own found
/// another order's message at the head and asked `GET /job` instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_orders_in_flight_share_one_poll_reader() {
    let env = plain_sim("poll-shared", Faults::default(), Duration::from_secs(2)).await;
    let names: Vec<String> = (0..8).map(|i| format!("c{i}.example.com")).collect();
    let certs: Vec<Cert<'_>> = names.iter().map(|n| Cert::autodns(n)).collect();
    env.write_config(&certs, "");
    let out = env.run_ok(&["run", "--once"]).await;
    for name in &names {
        env.assert_installed(name);
    }
    let calls = requests(&env);
    let reads = count(&calls, "GET /v1/poll");
    assert_eq!(count(&calls, "PUT /v1/poll/"), 8, "{calls:?}");
    assert_eq!(count(&calls, "GET /v1/job/"), 0, "{calls:?}\n{}", stderr(&out));
    assert!((8..=12).contains(&reads), "{reads} reads of the poll queue: {calls:?}");
}
