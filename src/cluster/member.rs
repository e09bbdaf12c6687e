//! Every member's side of the fleet: installs each generation the leader publishes into this
//! host's live directory, and reports what it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use time::OffsetDateTime;

use super::etcd::{Change, Entry, Fleet};
use super::{Material, Report};
use crate::config::CertConfig;
use crate::daemon::Shared;
use crate::keys::PrivateKey;
use crate::order::{Agent, Outcome};
use crate::x509;

/// How often everything published is looked at again, besides the watch: a reload that failed
/// is retried, and what a lost watch missed is caught up.
const RESYNC: Duration = Duration::from_secs(300);

/// Reads all material, installs what differs from what this host serves, then follows the
/// changes; starts over (after a pause that grows to 30 s) whenever etcd cannot be read.
/// Each look is stored in `last_check`, each configuration read again in `shared` (the
/// member's metrics read both; the leader's loop orders through an agent of its own).
pub(super) async fn follow(fleet: Arc<Fleet>, agent: Arc<Agent>, shared: Shared, last_check: Arc<AtomicI64>) {
    let mut agent = agent;
    let looked = |agent: &Arc<Agent>| {
        last_check.store(crate::daemon::now(), Ordering::Relaxed);
        if !fleet.is_leader() {
            *shared.write().unwrap_or_else(|p| p.into_inner()) = agent.clone();
        }
    };
    let mut read_at = std::fs::metadata(&agent.config.path).and_then(|m| m.modified()).ok();
    let mut pause = Duration::from_secs(1);
    loop {
        match fleet.list("material/").await {
            Ok((entries, rev)) => {
                pause = Duration::from_secs(1);
                for e in entries {
                    consider(&fleet, &mut agent, &mut read_at, e).await;
                }
                looked(&agent);
                let mut changes = fleet.watch("material/", rev + 1);
                let resync = tokio::time::sleep(RESYNC);
                tokio::pin!(resync);
                loop {
                    tokio::select! {
                        change = changes.recv() => match change {
                            Some(Change::Put(e)) => {
                                consider(&fleet, &mut agent, &mut read_at, e).await;
                                looked(&agent);
                            }
                            Some(Change::Lost(why)) => {
                                tracing::warn!(error = %why, "the fleet's watch ended; reading again");
                                fleet.rotate();
                                break;
                            }
                            None => break,
                        },
                        _ = &mut resync => {
                            republish(&fleet, &agent);
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                fleet.rotate();
                tracing::warn!(error = %e, "cannot read the fleet's certificates; this host keeps serving what it has");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// The leader's catch-up: what it deployed but could not publish then (etcd was away) goes out
/// now.
fn republish(fleet: &Fleet, agent: &Agent) {
    if !fleet.is_leader() {
        return;
    }
    for cert in &agent.config.certificates {
        if let Ok(st) = agent.store.load(&cert.name) {
            super::saved(&agent.store, &st);
        }
    }
}

/// A new leader's first step (the install lock held by the caller): every published generation
/// this host does not serve yet is installed.
pub(super) async fn catch_up(fleet: &Fleet, agent: &Agent) -> Result<(), String> {
    let (entries, _) = fleet.list("material/").await?;
    for e in entries {
        let Some(name) = e.key.strip_prefix(&fleet.key("material/")) else {
            continue;
        };
        let Some(cert) = agent.config.certificates.iter().find(|c| c.name == name) else {
            continue;
        };
        if let Err(error) = install(fleet, agent, cert, &e).await {
            tracing::error!(cert = %name, %error, "cannot install the fleet's certificate before leading; the leader's agent decides what it needs");
        }
    }
    Ok(())
}

/// One published generation: installed unless this host serves it already; reported either way.
async fn consider(fleet: &Fleet, agent: &mut Arc<Agent>, read_at: &mut Option<std::time::SystemTime>, e: Entry) {
    let Some(name) = e.key.strip_prefix(&fleet.key("material/")) else {
        return;
    };
    // The configuration as it is now (a reload hook, a certificate added): read again when the
    // file changed since it was read.
    let modified = std::fs::metadata(&agent.config.path).and_then(|m| m.modified()).ok();
    if modified != *read_at || !agent.config.certificates.iter().any(|c| c.name == name) {
        *read_at = modified;
        if let Ok(config) = crate::config::read(&agent.config.path)
            && let Ok(mut fresh) = Agent::new(config)
        {
            fresh.store.shared = false;
            *agent = Arc::new(fresh);
        }
    }
    let agent: &Agent = agent;
    let _installs = super::INSTALLS.lock().await;
    let Some(cert) = agent.config.certificates.iter().find(|c| c.name == name) else {
        tracing::warn!(cert = %name, "the fleet publishes a certificate this member's configuration does not have; left alone");
        return;
    };
    let leading = fleet.is_leader();
    let result = if leading {
        // The leader's agent keeps this host's files; what it serves is reported as it is.
        let st = agent.store.load(name).unwrap_or_default();
        Ok(Report {
            serial: st.serial.clone().filter(|_| st.deployed),
            deployed: st.deployed && st.pending_deploy.is_none(),
            error: None,
            at: OffsetDateTime::now_utc().unix_timestamp(),
        })
    } else {
        install(fleet, agent, cert, &e).await
    };
    let report = match result {
        Ok(report) => report,
        Err(error) => {
            tracing::error!(cert = %name, %error, "cannot install the fleet's certificate; this host keeps the files it has");
            let st = agent.store.load(name).unwrap_or_default();
            Report {
                serial: st.serial.filter(|_| st.deployed),
                deployed: false,
                error: Some(error),
                at: OffsetDateTime::now_utc().unix_timestamp(),
            }
        }
    };
    let at = fleet.key(&format!("members/{}/{name}", fleet.cfg.member));
    match serde_json::to_vec(&report) {
        Ok(bytes) => {
            if let Err(e) = fleet.put(at, bytes).await {
                tracing::warn!(cert = %name, error = %e, "cannot report to the fleet");
            }
        }
        Err(e) => tracing::warn!(cert = %name, error = %e, "cannot report to the fleet"),
    }
}

async fn install(fleet: &Fleet, agent: &Agent, cert: &CertConfig, e: &Entry) -> Result<Report, String> {
    let name = &cert.name;
    let plain = fleet.seal.open(&e.key, &e.value)?;
    let m: Material =
        serde_json::from_slice(&plain).map_err(|err| format!("{}: not certkeeper's material: {err}", e.key))?;
    let mut st = agent.store.load(name).map_err(|err| err.to_string())?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    if st.serial.as_deref() == Some(m.serial.as_str()) && st.deployed && st.pending_deploy.is_none() {
        return Ok(Report {
            serial: Some(m.serial),
            deployed: true,
            error: None,
            at: now,
        });
    }
    let generation = match st
        .pending_deploy
        .filter(|_| st.serial.as_deref() == Some(m.serial.as_str()))
    {
        // Written before, its reload failed: deployed again.
        Some(g) => g,
        None => {
            let key = PrivateKey::from_pem(&m.key).map_err(|err| format!("the published key of {name}: {err:#}"))?;
            let chain: Vec<String> = pem::parse_many(&m.chain)
                .map_err(|err| format!("the published chain of {name}: {err}"))?
                .iter()
                .map(pem::encode)
                .collect();
            let verified = x509::verify(
                &m.cert,
                &chain,
                &key.public_key_der(),
                &cert.all_names(),
                OffsetDateTime::now_utc(),
                agent.anchors(),
            )
            .map_err(|err| format!("refused the published certificate of {name}: {err}"))?;
            if verified.info.serial != m.serial {
                return Err(format!(
                    "the published certificate of {name} has serial {}, not the {} it was published as",
                    verified.info.serial, m.serial
                ));
            }
            let p12 = match &cert.smime {
                Some(smime) => Some(
                    crate::p12::bundle(
                        key.pem(),
                        &verified.leaf_pem,
                        &verified.intermediates_pem,
                        name,
                        smime.p12_password.expose(),
                    )
                    .map_err(|err| format!("{err:#}"))?,
                ),
                None => None,
            };
            let g = agent
                .store
                .write_generation_with(
                    name,
                    key.pem(),
                    &verified.leaf_pem,
                    &verified.intermediates_pem,
                    cert.key_access,
                    p12.as_deref(),
                )
                .map_err(|err| format!("writing the generation of {name}: {err}"))?;
            st.serial = Some(verified.info.serial.clone());
            st.not_before = Some(verified.info.not_before.unix_timestamp());
            st.not_after = Some(verified.info.not_after.unix_timestamp());
            st.issued_for = Some(crate::order::plan::issued_for(cert));
            st.pending_deploy = Some(g.number);
            tracing::info!(cert = %name, serial = %m.serial, generation = g.number, "the fleet's certificate verified and written");
            g.number
        }
    };
    match agent
        .deploy(cert, &mut st, generation)
        .await
        .map_err(|err| format!("{err:#}"))?
    {
        Outcome::Deployed { serial, .. } => Ok(Report {
            serial: Some(serial),
            deployed: true,
            error: None,
            at: now,
        }),
        Outcome::NotDeployed { error, .. } => Err(error),
        other => Err(format!("unexpected outcome: {other:?}")),
    }
}
