//! autodns-sim: a faithful, fault-injecting stand-in for the InterNetX AutoDNS SSL Manager JSON
//! API, with its own test CA and authoritative DNS server. It is to certkeeper what Pebble is to
//! ACME clients: everything is proven against it, and users can rehearse a configuration before
//! it spends money.
//!
//! By default it answers as the real samples of the API (`shared/autodns/real/`) show the
//! service, which is less kind than the spec: jobs without events or ctid, ended jobs only in
//! the job history, DEFERRED while DNS is not seen, undocumented search keys refused, a rate
//! limit per client IP answered 429 without Retry-After. Each friendlier or older form is a knob
//! of [`Faults`].
//!
//! Start one in-process with [`Sim::start`]; it stops when the [`RunningSim`] is dropped.

mod api;
pub mod ca;
pub mod config;
pub mod csr;
pub mod dns;
pub mod faults;
mod jobs;
mod server;
mod shared;
mod state;
pub mod time;
pub mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinHandle;

pub use api::ROUTE_KEYS;
pub use config::{Account, Durations, SimConfig};
pub use faults::{CaList, CreatedPrecision, DcvForm, FaultKind, Faults, JobOutcome, Mutation, RateLimitAnswer};
pub use state::{LedgerEntry, RequestEntry, Stats};

/// The entry point: `Sim::start(config)`.
#[derive(Debug)]
pub struct Sim;

impl Sim {
    /// Starts the API, the DNS server and the job runner, and writes the root CA file.
    pub async fn start(config: SimConfig) -> anyhow::Result<RunningSim> {
        config.faults.validate().map_err(anyhow::Error::msg)?;
        let zones = Arc::new(dns::ZoneStore::new(&config.zones).map_err(anyhow::Error::msg)?);
        let dns = dns::DnsServer::start(config.dns_listen, zones.clone()).await?;
        let dns_addr = dns.addr;
        let ca = ca::TestCa::new()?;
        let ca_pem = ca.root_pem().to_string();
        let (ca_file, owned_ca_dir) = match &config.ca_file {
            Some(path) => (path.clone(), None),
            None => {
                // A directory of our own: made new (never one someone prepared), 0700.
                let dir = std::env::temp_dir().join(format!("autodns-sim-{}-{}", std::process::id(), unique()));
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
                (dir.join("root.pem"), Some(dir))
            }
        };
        write_replacing(&ca_file, ca_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing the root CA to {}: {e}", ca_file.display()))?;
        let tls = if config.tls {
            let (chain, key) = ca.server_identity(config.tls_wrong_host.as_deref())?;
            Some(server::tls_config(chain, key)?)
        } else {
            None
        };
        let state = state::State::new(config.faults.clone(), config.seed);
        let shared = Arc::new(shared::Shared::new(
            state,
            ca,
            zones,
            config.durations.clone(),
            config.accounts.clone(),
        ));
        let listener = tokio::net::TcpListener::bind(config.api_listen).await?;
        let api_addr = listener.local_addr()?;
        let scheme = if config.tls { "https" } else { "http" };
        let api_url = format!("{scheme}://{api_addr}/v1");
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(server::serve(listener, tls, api::router(shared.clone()))));
        tasks.push(tokio::spawn(jobs::run(
            shared.clone(),
            config.dcv_nameserver.unwrap_or(dns_addr),
            config.file_check_address,
        )));
        let dns_task = tokio::spawn(async move {
            // Keep the server alive until this task is aborted.
            let _dns = dns;
            std::future::pending::<()>().await;
        });
        tasks.push(dns_task);
        Ok(RunningSim {
            api_url,
            api_addr,
            dns_addr,
            ca_pem,
            ca_file,
            owned_ca_dir,
            control: Control { shared },
            tasks,
        })
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A running simulator. Dropping it stops every task and removes its temporary files.
#[derive(Debug)]
pub struct RunningSim {
    /// The API base URL, e.g. `https://127.0.0.1:PORT/v1`.
    pub api_url: String,
    pub api_addr: SocketAddr,
    /// The DNS server's address (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The root CA certificate, PEM.
    pub ca_pem: String,
    /// Where the root CA certificate was written.
    pub ca_file: PathBuf,
    owned_ca_dir: Option<PathBuf>,
    control: Control,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSim {
    /// The control handle: faults, ledger, request log, DNS records, jobs.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The management API's base URL, e.g. `https://127.0.0.1:PORT/_sim`.
    pub fn sim_url(&self) -> String {
        self.api_url.trim_end_matches("/v1").to_string() + "/_sim"
    }

    /// Stops the simulator (the same as dropping it).
    pub fn stop(self) {}
}

impl Drop for RunningSim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(dir) = &self.owned_ca_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// In-process access to what the management API offers.
#[derive(Clone)]
pub struct Control {
    shared: Arc<shared::Shared>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.shared.lock().faults = faults;
        Ok(())
    }

    pub fn faults(&self) -> Faults {
        self.shared.lock().faults.clone()
    }

    /// Every create, renew and reissue so far.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.shared.lock().ledger.clone()
    }

    /// Answers the approval mail of EMAIL job `job_id` (as `POST /_sim/jobs/{id}` `approve`):
    /// it issues now. `false` for a job that waits for no approval.
    pub fn approve(&self, job_id: i64) -> bool {
        let s = &self.shared;
        s.lock().approve_job(job_id, &s.ca, &s.durations)
    }

    /// Every API request so far.
    pub fn requests(&self) -> Vec<RequestEntry> {
        self.shared.lock().requests.clone()
    }

    /// The counters (`GET /_sim/stats`): foreign poll messages the client confirmed, poll
    /// confirmations, rate-limited and delayed requests.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats.clone()
    }

    /// Sets a TXT record (replacing the set at that name).
    pub fn set_txt(&self, name: &str, value: &str) -> Result<(), String> {
        self.shared
            .zones
            .clear(name, Some(hickory_proto::rr::RecordType::TXT))?;
        self.shared
            .zones
            .add(name, dns::Value::Txt(value.into()), 300, std::time::Duration::ZERO)
    }

    /// Removes every record at `name`.
    pub fn clear_dns(&self, name: &str) -> Result<usize, String> {
        self.shared.zones.clear(name, None)
    }

    /// The DNS records the simulator serves.
    pub fn dns_records(&self) -> Vec<dns::RecordView> {
        self.shared.zones.list()
    }
}

/// Writes `path` as a new file and renames it into place: a link found at `path` is replaced,
/// never written through.
fn write_replacing(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_file_name(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    drop(f);
    std::fs::rename(&tmp, path)
}
