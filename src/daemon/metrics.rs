//! The daemon's Prometheus metrics (`daemon.metrics_listen`): served a bounded number of
//! connections at once, each with its own deadline, from the certificates' state files.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::{Shared, current, now};
use crate::config::CertConfig;
use crate::order::{self, Agent};

/// The most metrics connections served at once; more wait for a free one.
const METRICS_CONNECTIONS: usize = 32;

/// More metrics, read at each scrape (a fleet member's, from etcd).
pub(crate) type Extra = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = String> + Send>> + Send + Sync>;

/// How long a scrape waits for the [`Extra`] metrics; without them in time, it answers without.
const EXTRA_TIMEOUT: Duration = Duration::from_secs(3);

/// Serves Prometheus metrics: each connection on its own task with a deadline of its own (30 idle
/// connections used to delay a scrape by a minute), a bounded number at once. A failing accept
/// (out of file descriptors, say) is retried after a pause, not in a spin.
pub(crate) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    shared: Shared,
    last_check: Arc<AtomicI64>,
    extra: Option<Extra>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(METRICS_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a metrics connection");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let last_check = last_check.clone();
        let extra = extra.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let answer = answer_metrics(stream, &shared, &last_check, extra);
            let _ = tokio::time::timeout(Duration::from_secs(5), answer).await;
        });
    }
}

async fn answer_metrics(
    mut stream: tokio::net::TcpStream,
    shared: &Shared,
    last_check: &AtomicI64,
    extra: Option<Extra>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = [0u8; 1024];
    let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await;
    let mut body = metrics_text(&current(shared), last_check.load(Ordering::Relaxed));
    if let Some(extra) = extra
        && let Ok(more) = tokio::time::timeout(EXTRA_TIMEOUT, extra()).await
    {
        body.push_str(&more);
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
}

/// The metrics, with names modelled on cert-manager's.
pub(crate) fn metrics_text(agent: &Agent, last_check: i64) -> String {
    let t = now();
    let mut out = String::new();
    let mut metric = |name: &str, help: &str, values: &mut dyn Iterator<Item = (String, f64)>| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (cert, v) in values {
            out.push_str(&format!("{name}{{name=\"{cert}\"}} {v}\n"));
        }
    };
    let states: Vec<(CertConfig, crate::store::CertState)> = agent
        .config
        .certificates
        .iter()
        .map(|c| (c.clone(), agent.store.load(&c.name).unwrap_or_default()))
        .collect();
    let pick = |f: &dyn Fn(&CertConfig, &crate::store::CertState) -> Option<f64>| -> Vec<(String, f64)> {
        states
            .iter()
            .filter_map(|(c, s)| f(c, s).map(|v| (c.name.clone(), v)))
            .collect()
    };
    metric(
        "certkeeper_certificate_expiration_timestamp_seconds",
        "The date after which the installed certificate expires, as a Unix timestamp.",
        &mut pick(&|_, s| s.not_after.map(|v| v as f64)).into_iter(),
    );
    metric(
        "certkeeper_certificate_renewal_timestamp_seconds",
        "The date from which certkeeper will renew the certificate, as a Unix timestamp.",
        &mut pick(&|c, s| Some(order::next(c, s, &agent.config.daemon, t).at as f64)).into_iter(),
    );
    metric(
        "certkeeper_certificate_term_end_timestamp_seconds",
        "The end of the paid order term, as a Unix timestamp.",
        &mut pick(&|_, s| s.term_end.map(|v| v as f64)).into_iter(),
    );
    metric(
        "certkeeper_certificate_ready_status",
        "1 when a valid certificate is deployed, else 0.",
        &mut pick(&|_, s| {
            Some(if s.deployed && s.not_after.is_some_and(|na| na > t) {
                1.0
            } else {
                0.0
            })
        })
        .into_iter(),
    );
    metric(
        "certkeeper_certificate_last_success_timestamp_seconds",
        "When the certificate was last renewed and deployed, as a Unix timestamp.",
        &mut pick(&|_, s| s.last_success.map(|v| v as f64)).into_iter(),
    );
    metric(
        "certkeeper_certificate_failures",
        "Consecutive failed attempts.",
        &mut pick(&|_, s| Some(f64::from(s.failures))).into_iter(),
    );
    // Per served check address: whether it handed out what the check expected (after a deploy
    // the new certificate, else the live one), and the expiry of what it handed out, so that a
    // forgotten server shows before its certificate expires.
    let served: Vec<(&str, &crate::store::Served)> = states
        .iter()
        .flat_map(|(c, s)| s.served.iter().map(move |v| (c.name.as_str(), v)))
        .collect();
    if !served.is_empty() {
        out.push_str("# HELP certkeeper_certificate_served 1 when the address handed out the certificate the last served check expected, else 0.\n# TYPE certkeeper_certificate_served gauge\n");
        for (name, v) in &served {
            out.push_str(&format!(
                "certkeeper_certificate_served{{name=\"{name}\",address=\"{}\"}} {}\n",
                v.address,
                u8::from(v.ok())
            ));
        }
        out.push_str("# HELP certkeeper_certificate_served_expiration_timestamp_seconds The expiry of the certificate the address handed out at the last served check, as a Unix timestamp.\n# TYPE certkeeper_certificate_served_expiration_timestamp_seconds gauge\n");
        for (name, v) in &served {
            if let Some(na) = v.not_after {
                out.push_str(&format!(
                    "certkeeper_certificate_served_expiration_timestamp_seconds{{name=\"{name}\",address=\"{}\"}} {na}\n",
                    v.address
                ));
            }
        }
    }
    out.push_str(&format!(
        "# HELP certkeeper_last_check_timestamp_seconds When the daemon last looked at its certificates; a stale value means a dead agent.\n# TYPE certkeeper_last_check_timestamp_seconds gauge\ncertkeeper_last_check_timestamp_seconds {last_check}\n"
    ));
    out
}
