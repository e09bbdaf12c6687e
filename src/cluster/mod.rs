//! Fleet mode (`[cluster]`): many web servers, one order per certificate.
//!
//! Every member runs `certkeeper run` with its own state and live directories. They elect one
//! leader through an etcd lease ([`etcd`]); only the leader runs the daemon's loop, so only it
//! talks to AutoDNS (orders, reissues, the poll queue). Each state the leader saves, the order's
//! journal in it, goes to etcd first, sealed with the fleet key and fenced by the leader's
//! election key ([`replicate`]): a new leader takes the journals from there and resumes each
//! order where the old leader stopped, as a restart resumes it from disk. After the leader
//! deploys a generation it publishes the certificate, chain and key (sealed) as the
//! certificate's material; every member, the leader included, watches the material, installs
//! each new generation into its own live directory as an order's delivery is installed (verified
//! against the key and names, a generation, the atomic switch, the reload hook, the rollback),
//! and reports what it serves under `members/MEMBER/NAME` ([`member`]).
//!
//! Keys under the prefix: `leader` (the election), `state/NAME` (sealed), `material/NAME`
//! (sealed), `members/MEMBER/NAME` (a member's report, JSON), `contacts` (sealed: the contacts
//! created from configured details, as contacts.json).

mod etcd;
mod member;
pub(crate) mod seal;
pub(crate) mod status;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::AtomicI64;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub(crate) use etcd::Fleet;

use crate::config::Config;
use crate::order::Agent;
use crate::run::{Exit, Refusal};
use crate::store::{CertState, Step, Store};

/// The key of the fleet's contacts.json.
const CONTACTS: &str = "contacts";

/// The fleet of this process: set once by [`run`], consulted by every save of a shared store.
static FLEET: OnceLock<Arc<Fleet>> = OnceLock::new();

/// Held while a member installs a published generation and while a new leader takes over: the
/// two never touch one host's files at once. While this member leads, it installs nothing (its
/// leader's agent does).
static INSTALLS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the leader publishes of a deployed generation: what a member needs to install it.
#[derive(Serialize, Deserialize)]
pub(crate) struct Material {
    pub(crate) serial: String,
    pub(crate) cert: String,
    pub(crate) chain: String,
    pub(crate) key: String,
}

/// A member's report of one certificate.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub(crate) struct Report {
    pub(crate) serial: Option<String>,
    pub(crate) deployed: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
    pub(crate) at: i64,
}

/// Whether this process may act for the fleet: outside a fleet always; in one, only while this
/// member leads (its lease not past its deadline).
pub(crate) fn leading() -> Result<(), String> {
    match FLEET.get() {
        Some(f) if !f.is_leader() => Err("this member is not the fleet's leader; nothing is asked of the API".into()),
        _ => Ok(()),
    }
}

/// Called by [`Store::save`] of a shared store before the state file is written: in a fleet,
/// the state goes to etcd first, sealed and fenced. Outside a fleet it does nothing.
pub(crate) fn replicate(st: &CertState, bytes: &[u8]) -> io::Result<()> {
    let Some(fleet) = FLEET.get() else { return Ok(()) };
    let at = fleet.key(&format!("state/{}", st.name));
    let sealed = fleet.seal.seal(&at, bytes);
    fleet
        .fenced_put_blocking(at, sealed)
        .map_err(|e| io::Error::other(format!("the fleet's copy of {}'s state: {e}", st.name)))
}

/// Called by [`Store::write_contacts`] of a shared store after contacts.json is written: in a
/// fleet, the contacts created from configured details go to etcd too (sealed, fenced), and a
/// new leader takes them over ([`take_over`]).
pub(crate) fn replicate_contacts(bytes: &[u8]) -> io::Result<()> {
    let Some(fleet) = FLEET.get() else { return Ok(()) };
    let at = fleet.key(CONTACTS);
    let sealed = fleet.seal.seal(&at, bytes);
    fleet
        .fenced_put_blocking(at, sealed)
        .map_err(|e| io::Error::other(format!("the fleet's copy of contacts.json: {e}")))
}

/// Called by [`Store::save`] of a shared store after the state file is written: a newly
/// deployed generation is published to the members. A publication that fails is logged and
/// tried again at the next save or the members' next look.
pub(crate) fn saved(store: &Store, st: &CertState) {
    let Some(fleet) = FLEET.get() else { return };
    if let Err(e) = publish_deployed(fleet, store, st) {
        tracing::error!(cert = %st.name, error = %e, "cannot publish the deployed certificate to the fleet");
    }
}

/// Publishes `st`'s deployed generation unless it was published already.
fn publish_deployed(fleet: &Arc<Fleet>, store: &Store, st: &CertState) -> io::Result<()> {
    // Only a state with no order in flight: while one is, its serial may already be the new
    // certificate's and its generation still the old one.
    if st.deployed
        && st.pending_deploy.is_none()
        && st.order.is_none()
        && let (Some(serial), Some(generation)) = (&st.serial, st.generation)
    {
        let already = fleet
            .published
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&st.name)
            .is_some_and(|s| s == serial);
        if !already {
            publish(fleet, store, &st.name, serial, generation)?;
        }
    }
    Ok(())
}

/// Puts the material of `name`'s deployed `generation` in etcd.
fn publish(fleet: &Arc<Fleet>, store: &Store, name: &str, serial: &str, generation: u32) -> io::Result<()> {
    let g = store.generation(name, generation);
    let read = |p: &std::path::Path| std::fs::read_to_string(p);
    let material = Material {
        serial: serial.to_string(),
        cert: read(&g.dir.join(crate::store::files::CERT))?,
        chain: read(&g.dir.join(crate::store::files::CHAIN))?,
        key: read(&g.dir.join(crate::store::files::KEY))?,
    };
    let at = fleet.key(&format!("material/{name}"));
    let plain = serde_json::to_vec(&material).map_err(io::Error::other)?;
    fleet
        .fenced_put_blocking(at.clone(), fleet.seal.seal(&at, &plain))
        .map_err(|e| io::Error::other(format!("publishing {name}'s generation to the fleet: {e}")))?;
    tracing::info!(cert = %name, %serial, "published to the fleet");
    fleet
        .published
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string(), serial.to_string());
    Ok(())
}

/// `certkeeper run` with `[cluster]`: installs what the leader publishes, and stands for
/// election; while elected, runs the daemon's loop. Until SIGTERM or SIGINT.
pub(crate) async fn run(path: PathBuf, config: Config) -> Result<Exit, Refusal> {
    use tokio::signal::unix::{SignalKind, signal};
    let cfg = config
        .cluster
        .clone()
        .ok_or_else(|| Refusal::new(Exit::Config, "no [cluster]".into()))?;
    let (agent, lock) = crate::run::start_member(config.clone())?;
    let fleet = Fleet::connect(cfg).map_err(|e| Refusal::new(Exit::Error, e))?;
    if FLEET.set(fleet.clone()).is_err() {
        return Err(Refusal::new(
            Exit::Error,
            "a fleet is already running in this process".into(),
        ));
    }
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return Err(Refusal::new(
            Exit::Error,
            "cannot watch signals (SIGTERM, SIGINT)".into(),
        ));
    };
    tracing::info!(member = %fleet.cfg.member, endpoints = %fleet.cfg.endpoints.join(", "), certificates = config.certificates.len(), pid = std::process::id(), "certkeeper fleet member started");
    // The member's side: its own store, never shared.
    let mut local = Agent::new(config.clone()).map_err(|e| Refusal::new(Exit::Error, format!("{e:#}")))?;
    local.store.shared = false;
    let local = Arc::new(local);
    // The member's metrics, for its whole life: this host's certificates as any member's, and
    // the fleet's from etcd.
    let shared: crate::daemon::Shared = Arc::new(std::sync::RwLock::new(local.clone()));
    let last_check = Arc::new(AtomicI64::new(crate::daemon::now()));
    let metrics = match config.daemon.metrics_listen {
        Some(addr) => match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, "serving metrics");
                let (f, s) = (fleet.clone(), shared.clone());
                let extra: crate::daemon::Extra = Arc::new(move || {
                    let (f, s) = (f.clone(), s.clone());
                    Box::pin(async move { status::metrics(&f, &crate::daemon::current(&s).config).await })
                });
                Some(tokio::spawn(crate::daemon::serve_metrics(
                    listener,
                    shared.clone(),
                    last_check.clone(),
                    Some(extra),
                )))
            }
            Err(e) => {
                tracing::error!(%addr, error = %e, "cannot serve metrics");
                None
            }
        },
        None => None,
    };
    let follower = tokio::spawn(member::follow(
        fleet.clone(),
        local.clone(),
        shared.clone(),
        last_check.clone(),
    ));
    let mut pause = Duration::from_secs(1);
    let exit = loop {
        let won = tokio::select! {
            r = fleet.campaign() => r,
            _ = term.recv() => break Exit::Ok,
            _ = int.recv() => break Exit::Ok,
        };
        if let Err(e) = won {
            tracing::warn!(member = %fleet.cfg.member, error = %e, "cannot stand for election; trying again");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = term.recv() => break Exit::Ok,
                _ = int.recv() => break Exit::Ok,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
            continue;
        }
        pause = Duration::from_secs(1);
        tracing::info!(member = %fleet.cfg.member, "elected the fleet's leader: ordering for every member");
        if let Err(e) = take_over(&fleet, &local).await {
            tracing::error!(error = %e, "cannot take over the fleet's journals; standing down, so that another member may lead");
            fleet.lose("the fleet's journals could not be taken over");
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = term.recv() => break Exit::Ok,
                _ = int.recv() => break Exit::Ok,
            }
            pause = (pause * 2).min(Duration::from_secs(30));
            continue;
        }
        // A fresh agent, on the configuration as it is now.
        let leader = match crate::config::read(&path) {
            Ok(c) => match Agent::new(c) {
                Ok(a) => Arc::new(a),
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start the leader's agent on the configuration as it is now; using the one read at start");
                    agent.clone()
                }
            },
            Err(e) => {
                tracing::error!(error = %e, "the configuration does not read now; the leader uses the one read at start");
                agent.clone()
            }
        };
        let leadership = crate::daemon::Leadership {
            leading: fleet.leading(),
            metrics: shared.clone(),
            last_check: last_check.clone(),
        };
        match crate::daemon::serve(path.clone(), leader, Some(leadership)).await {
            Some(exit) => break exit,
            None => {
                tracing::info!(member = %fleet.cfg.member, "standing for election again");
            }
        }
    };
    // Another member leads at once, not after the lease's time.
    fleet.resign().await;
    follower.abort();
    // The follower may be installing on another worker: it stops at its next await, and only
    // then is the lock let go (a clean end is written in it only with no write in flight).
    let _ = follower.await;
    if let Some(m) = metrics {
        m.abort();
    }
    drop(lock);
    Ok(exit)
}

/// A new leader's first step: each certificate's state as the last leader left it in etcd,
/// taken into this member's state files. What concerns the order (the journal, the paid
/// requests, the jobs, the consent, the term) comes from etcd; what concerns this host's files
/// (which generation is live, whether it was deployed) stays this member's. A journal past its
/// download goes back to `downloaded`: the generation it names is the old leader's, so the
/// delivery is verified and written again here.
async fn take_over(fleet: &Arc<Fleet>, local: &Arc<Agent>) -> Result<(), String> {
    // What the members install waits: from here on this host's files are the leader's agent's.
    let _installs = INSTALLS.lock().await;
    // First what the last leader published and this host does not serve yet, so that the
    // order's side below meets this host's files as the fleet has them.
    member::catch_up(fleet, local).await?;
    let (entries, _) = fleet.list("state/").await?;
    let mut taken = 0;
    for e in entries {
        let Some(name) = e.key.strip_prefix(&fleet.key("state/")) else {
            continue;
        };
        if !crate::config::is_hostname(name) && !crate::config::is_mailbox(name) {
            // Names become paths only once checked.
            tracing::warn!(key = %e.key, "a state in etcd under a name certkeeper would not write; left alone");
            continue;
        }
        let plain = fleet.seal.open(&e.key, &e.value)?;
        let theirs: CertState =
            serde_json::from_slice(&plain).map_err(|err| format!("{}: not a certificate state: {err}", e.key))?;
        if theirs.name != name {
            return Err(format!("{} holds the state of {}", e.key, theirs.name));
        }
        let mut ours = local.store.load(name).map_err(|err| err.to_string())?;
        merge(&mut ours, theirs);
        local.store.save(&ours).map_err(|err| err.to_string())?;
        taken += 1;
    }
    tracing::info!(certificates = taken, "took the fleet's journals");
    take_contacts(fleet, local).await
}

/// The contacts the last leader created, added to this host's contacts.json (a contact this
/// host knows already keeps its id); and what only this host knew (contacts from before the
/// fleet, or a copy etcd did not take) goes to etcd, so that the next leader knows it too.
async fn take_contacts(fleet: &Arc<Fleet>, local: &Arc<Agent>) -> Result<(), String> {
    use std::collections::BTreeMap;
    let at = fleet.key(CONTACTS);
    let (entries, _) = fleet.list(CONTACTS).await?;
    let theirs: BTreeMap<String, i64> = match entries.into_iter().find(|e| e.key == at) {
        Some(e) => {
            let plain = fleet.seal.open(&e.key, &e.value)?;
            serde_json::from_slice(&plain).map_err(|err| format!("{at}: not certkeeper's contacts: {err}"))?
        }
        None => BTreeMap::new(),
    };
    let path = local.store.contacts_path();
    let mut ours: BTreeMap<String, i64> = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let before = ours.len();
    for (k, id) in &theirs {
        ours.entry(k.clone()).or_insert(*id);
    }
    let bytes = serde_json::to_vec_pretty(&ours).map_err(|err| err.to_string())?;
    if ours.len() > before {
        local
            .store
            .write_contacts(&bytes)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        tracing::info!(contacts = ours.len() - before, "took the fleet's contacts");
    }
    if ours.len() > theirs.len() {
        let sealed = fleet.seal.seal(&at, &bytes);
        fleet
            .fenced_put(at, sealed)
            .await
            .map_err(|e| format!("the fleet's copy of contacts.json: {e}"))?;
    }
    Ok(())
}

/// `ours` (this host's state) with the order's side of `theirs` (the last leader's).
fn merge(ours: &mut CertState, theirs: CertState) {
    ours.version = theirs.version;
    ours.certificate_id = theirs.certificate_id;
    ours.term_end = theirs.term_end;
    ours.paid = theirs.paid;
    ours.jobs = theirs.jobs;
    ours.csr_crlf = theirs.csr_crlf;
    ours.consent = theirs.consent;
    ours.revocation = theirs.revocation;
    ours.revoked = theirs.revoked;
    ours.retry_after = theirs.retry_after;
    ours.order = theirs.order.map(|mut j| {
        if j.step == Step::Installed {
            j.step = Step::Downloaded;
            j.generation = None;
        }
        j
    });
    // The certificate the last leader deployed is the one this host serves once it installed
    // the material; until then this host's own facts stand.
    if ours.serial.is_none() {
        ours.issued_for = theirs.issued_for;
    }
}
