//! The job runner: it completes jobs once domain control is proven, by a real DNS query to the
//! configured nameserver (at the record name prepareOrder announced) or, for FILE validation, by
//! a real HTTP GET of `http://NAME/.well-known/pki-validation/fileauth.txt` (to the configured
//! address, else to port 80 of the name's A record in our DNS); defers them while the record or
//! file is not served, and fails them after the DCV timeout. EMAIL jobs wait for their approval
//! (`state::jobs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use tokio::task::JoinSet;

use crate::shared::Shared;

/// A resolver that asks `nameserver` directly, without caching, so a new record is seen at once.
pub fn dcv_resolver(nameserver: SocketAddr) -> Resolver<TokioConnectionProvider> {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(nameserver, Protocol::Udp));
    config.add_name_server(NameServerConfig::new(nameserver, Protocol::Tcp));
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_secs(1);
    opts.attempts = 1;
    opts.recursion_desired = false;
    opts.edns0 = true;
    Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build()
}

/// Runs until aborted: looks at due jobs every `dcv_interval`, or at once when woken.
pub async fn run(shared: Arc<Shared>, nameserver: SocketAddr, file_check: Option<SocketAddr>) {
    let resolver = Arc::new(dcv_resolver(nameserver));
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.durations.dcv_interval) => {}
        }
        tick(&shared, &resolver, nameserver, file_check).await;
    }
}

async fn tick(
    shared: &Arc<Shared>,
    resolver: &Arc<Resolver<TokioConnectionProvider>>,
    nameserver: SocketAddr,
    file_check: Option<SocketAddr>,
) {
    // AutoDNS removes the records it provisioned once the job has ended.
    let stale = std::mem::take(&mut shared.lock().stale_records);
    for (name, token) in stale {
        let _ = shared.zones.remove(&name, &crate::dns::Value::Txt(token));
    }
    let (checks, ready) = shared.lock().due_jobs(&shared.durations);
    for id in ready {
        shared.lock().complete_job(id, &shared.ca, &shared.durations);
    }
    let mut lookups = JoinSet::new();
    for check in checks {
        let resolver = resolver.clone();
        lookups.spawn(async move {
            let mut missing = None;
            for (name, token) in &check.records {
                if check.file {
                    if let Err(why) = file_served(&resolver, file_check, name, token).await {
                        missing = Some(why);
                        break;
                    }
                    continue;
                }
                let served = match resolver.txt_lookup(name.as_str()).await {
                    Ok(answer) => answer.iter().any(|txt| {
                        txt.txt_data()
                            .iter()
                            .map(|b| String::from_utf8_lossy(b))
                            .collect::<String>()
                            == *token
                    }),
                    Err(_) => false,
                };
                if !served {
                    missing = Some(format!("{nameserver} does not serve the TXT record for {name}"));
                    break;
                }
            }
            (check, missing)
        });
    }
    while let Some(joined) = lookups.join_next().await {
        let Ok((check, missing)) = joined else { continue };
        match missing {
            None => shared.lock().complete_job(check.job_id, &shared.ca, &shared.durations),
            Some(why) if check.timed_out => {
                let reason = format!("domain control validation failed: {why}");
                shared.lock().finish_job(check.job_id, None, Some(reason));
            }
            Some(_) => shared.lock().defer_job(check.job_id),
        }
    }
}

/// The most of a validation file's answer that is read.
const FILE_BODY_MAX: usize = 16 * 1024;

/// Whether `http://NAME/.well-known/pki-validation/fileauth.txt` answers 200 with exactly
/// `content` (surrounding white space aside, as CAs accept a trailing newline), asked of
/// `address` (the name in the Host header) or of port 80 of the name's A record; else why not.
async fn file_served(
    resolver: &Resolver<TokioConnectionProvider>,
    address: Option<SocketAddr>,
    name: &str,
    content: &str,
) -> Result<(), String> {
    let path = format!("/{}", crate::state::FILE_PATH);
    let addr = match address {
        Some(a) => a,
        None => match resolver.ipv4_lookup(name).await {
            Ok(answer) => match answer.iter().next() {
                Some(a) => SocketAddr::from((a.0, 80)),
                None => return Err(format!("{name} has no address")),
            },
            Err(e) => return Err(format!("{name} has no address: {e}")),
        },
    };
    let url = format!("http://{name}{path} (at {addr})");
    let got = tokio::time::timeout(Duration::from_secs(5), http_get(addr, name, &path))
        .await
        .map_err(|_| format!("{url} did not answer within 5 s"))?
        .map_err(|e| format!("{url}: {e}"))?;
    match got {
        (200, body) if body.trim() == content => Ok(()),
        (200, body) => Err(format!(
            "{url} serves {} bytes that are not the validation content",
            body.len()
        )),
        (status, _) => Err(format!("{url} answers HTTP {status}")),
    }
}

/// One HTTP/1.1 GET with `Host: host`; the status and at most [`FILE_BODY_MAX`] bytes of body.
async fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .header(hyper::header::USER_AGENT, "autodns-sim-dcv")
        .body(String::new())
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), FILE_BODY_MAX)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    conn.abort();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
