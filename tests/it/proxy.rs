//! A hostile network or API in front of the simulator: a loopback HTTP proxy that forwards
//! requests to autodns-sim, or drops, fails, hides or garbles them, route by route, as a rule
//! says. The simulator stays the ground truth of what was ordered and paid.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the proxy does with one request.
#[derive(Clone, Debug)]
pub enum Act {
    /// Passes it on and answers what the simulator answers.
    Forward,
    /// Passes it on (it takes effect), then closes the connection without an answer.
    ForwardThenDrop,
    /// Closes the connection without passing it on (it never arrives).
    Drop,
    /// Answers this without passing it on.
    Answer(u16, String),
    /// Passes it on (it takes effect), then answers this instead of the simulator's answer.
    ForwardThenAnswer(u16, String),
    /// Passes on the body rewritten by the function.
    Rewrite(fn(&str) -> String),
}

/// The rule: method, path (after `/v1`, without the query) and body in, what to do out.
pub type Rule = Box<dyn Fn(&str, &str, &str) -> Act + Send>;

/// One request the proxy saw.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

pub struct Proxy {
    pub url: String,
    rule: Arc<Mutex<Rule>>,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

/// An error envelope as the API writes it.
pub fn error_body(code: &str) -> String {
    format!(
        r#"{{"stid":"proxy","status":{{"code":"{code}","text":"internal error","type":"ERROR"}},"messages":[{{"text":"internal error","code":"{code}","status":"ERROR"}}]}}"#
    )
}

/// A successful envelope with no data: an empty search, an empty poll queue.
pub fn empty_body(code: &str) -> String {
    format!(r#"{{"stid":"proxy","status":{{"code":"{code}","text":"ok","type":"SUCCESS"}},"data":[]}}"#)
}

impl Proxy {
    /// Starts a proxy to the simulator at `upstream` (its `/v1` URL), trusting `ca_pem`.
    pub async fn start(upstream: &str, ca_pem: &[u8], rule: Rule) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let http = reqwest::Client::builder()
            .tls_certs_merge(reqwest::Certificate::from_pem_bundle(ca_pem).unwrap())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let upstream = upstream.trim_end_matches('/').to_string();
        let rule = Arc::new(Mutex::new(rule));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (r, s) = (rule.clone(), seen.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (http, upstream, rule, seen) = (http.clone(), upstream.clone(), r.clone(), s.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &http, &upstream, &rule, &seen).await;
                });
            }
        });
        Self { url, rule, seen, task }
    }

    /// Replaces the rule.
    pub fn set(&self, rule: Rule) {
        *self.rule.lock().unwrap() = rule;
    }

    /// The requests seen so far with this method and path.
    pub fn count(&self, method: &str, path: &str, body_has: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.method == method && s.path == path && s.body.contains(body_has))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    http: &reqwest::Client,
    upstream: &str,
    rule: &Mutex<Rule>,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    // The head, then the body it announces; bounded.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 1 << 20 {
            return Ok(());
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk)).await??;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).to_string();
    let path = target
        .split('?')
        .next()
        .unwrap_or_default()
        .trim_start_matches("/v1")
        .to_string();
    let act = (rule.lock().unwrap())(&method, &path, &body);
    seen.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        body: body.clone(),
    });
    let forward = |body: String| async move {
        let mut req = http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{upstream}{}", target.trim_start_matches("/v1")),
        );
        for (k, v) in &headers {
            if matches!(
                k.as_str(),
                "authorization"
                    | "x-domainrobot-context"
                    | "x-domainrobot-ctid"
                    | "content-type"
                    | "user-agent"
                    | "accept"
            ) {
                req = req.header(k.as_str(), v.as_str());
            }
        }
        match req.body(body).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(e) => (502, error_body(&format!("proxy: {e}"))),
        }
    };
    let answer = match act {
        Act::Forward => Some(forward(body).await),
        Act::Rewrite(f) => Some(forward(f(&body)).await),
        Act::ForwardThenDrop => {
            forward(body).await;
            None
        }
        Act::Drop => None,
        Act::Answer(status, text) => Some((status, text)),
        Act::ForwardThenAnswer(status, text) => {
            forward(body).await;
            Some((status, text))
        }
    };
    if let Some((status, text)) = answer {
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            text.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(text.as_bytes()).await?;
    }
    Ok(())
}
