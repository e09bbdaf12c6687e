//! The job runner: it completes jobs once domain control is proven by a real DNS query to the
//! configured nameserver (at the record name prepareOrder announced), defers them while the
//! record is not served, fails them after the DCV timeout, and completes FILE and EMAIL jobs
//! after the job delay.

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
pub async fn run(shared: Arc<Shared>, nameserver: SocketAddr) {
    let resolver = Arc::new(dcv_resolver(nameserver));
    loop {
        tokio::select! {
            _ = shared.wake.notified() => {}
            _ = tokio::time::sleep(shared.durations.dcv_interval) => {}
        }
        tick(&shared, &resolver, nameserver).await;
    }
}

async fn tick(shared: &Arc<Shared>, resolver: &Arc<Resolver<TokioConnectionProvider>>, nameserver: SocketAddr) {
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
                    missing = Some(name.clone());
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
            Some(name) if check.timed_out => {
                let reason =
                    format!("domain control validation failed: {nameserver} does not serve the TXT record for {name}");
                shared.lock().finish_job(check.job_id, None, Some(reason));
            }
            Some(_) => shared.lock().defer_job(check.job_id),
        }
    }
}
