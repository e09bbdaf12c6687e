//! `certkeeper revoke NAME --reason R`: a leaked key (or a certificate no longer wanted) is
//! replaced and then revoked, in that order. A new key and a free reissue come first, deployed
//! (and, where `serve_check` is set, seen served); only then is `POST /certificate/{id}/_revoke`
//! sent for the serial that was live when the revocation was asked for.
//!
//! The revocation is journaled in the certificate's state (`Revocation`): `planned` before the
//! reissue, `sending` before the revoke request leaves. A run killed at any point resumes from
//! there when `revoke` is run again: the reissue goes on from its own journal, and a `sending`
//! revocation first looks at the certificate's `histories`, so the serial is never revoked
//! twice. What is sent is always the journaled old serial, and only while another certificate
//! is deployed, so the certificate that is served is never revoked.

use time::OffsetDateTime;

use crate::config::Config;
use crate::order::Outcome;
use crate::run::{Exit, Refusal, say};
use crate::store::{CertState, Revocation, RevokeReason, RevokeStep, Revoked};

/// Crash-test points (with `order::PAUSE_ENV`): the revocation journaled as planned, as
/// sending, and the revoke's answer arrived but not journaled.
pub const PAUSE_PLANNED: &str = "revoke_planned";
pub const PAUSE_SENDING: &str = "revoke_sending";
pub const PAUSE_ANSWERED: &str = "revoke_answered";

pub(crate) async fn revoke(config: Config, name: &str, reason: RevokeReason) -> Result<Exit, Refusal> {
    let name = name.to_ascii_lowercase();
    let Some(cert) = config.certificates.iter().find(|c| c.name == name).cloned() else {
        return Err(Refusal::new(
            Exit::Config,
            format!("{name} is not a configured certificate"),
        ));
    };
    let (agent, _lock) = crate::run::start(config)?;
    let failed = |e: anyhow::Error| Refusal::new(Exit::Error, format!("{name}: {e:#}"));
    let mut st = agent.store.load(&name).map_err(|e| failed(e.into()))?;
    let rev = match st.revocation.clone() {
        Some(rev) => {
            if rev.reason != reason {
                say(&format!(
                    "{name}: going on with the revocation of serial {} asked for with --reason {}",
                    rev.serial,
                    rev.reason.name()
                ));
            }
            rev
        }
        None => {
            // The serial of what `live/NAME` points at, read from its certificate: the state's
            // serial is already the new one while an order is at its last step.
            let live = agent
                .store
                .live_generation(&name)
                .and_then(|g| agent.store.generation_cert(&name, g).ok())
                .and_then(|pem| crate::x509::info(&pem).ok());
            let Some(live) = live else {
                return Err(Refusal::new(
                    Exit::Error,
                    format!(
                        "{name}: no certificate is installed (or it cannot be read), so there is nothing to revoke"
                    ),
                ));
            };
            let rev = Revocation {
                serial: live.serial,
                reason,
                step: RevokeStep::Planned,
                since: OffsetDateTime::now_utc().unix_timestamp(),
                ctid: None,
                certificate_id: st.certificate_id,
            };
            st.revocation = Some(rev.clone());
            agent.store.save(&st).map_err(|e| failed(e.into()))?;
            tracing::warn!(cert = %name, serial = %rev.serial, reason = reason.name(), "revocation asked for: a new certificate first, then the revoke");
            crate::order::pause_for_tests(PAUSE_PLANNED, &name);
            rev
        }
    };
    let mut rev = rev;
    // What the daemon found not served is asked again: the old certificate may be what a server
    // still hands out, and that is never revoked.
    if st.deployed && st.not_served.is_some() && st.order.is_none() {
        let _ = agent.recheck_served(&cert).await;
        st = agent.store.load(&name).map_err(|e| failed(e.into()))?;
    }
    if rev.step == RevokeStep::Sending && !replaced(&st, &rev) {
        // Resumed: what is live must still be another certificate.
        rev.step = RevokeStep::Planned;
    }
    if rev.step == RevokeStep::Planned {
        if !replaced(&st, &rev) {
            let force = st.order.is_none() && st.serial.as_deref() == Some(rev.serial.as_str());
            let result = Box::pin(agent.ensure(&cert, force)).await;
            let (exit, line) = crate::run::outcome_line(&name, &result);
            say(&line);
            match &result {
                Ok(Outcome::NotDeployed { error, not_served, .. }) => {
                    let event = if *not_served { "not_served" } else { "not_deployed" };
                    crate::run::tell_on_failure(&agent, &cert, event, error, 0).await
                }
                Err(e) => crate::run::tell_on_failure(&agent, &cert, "failed", &format!("{e:#}"), 0).await,
                Ok(_) => {}
            }
            st = agent.store.load(&name).map_err(|e| failed(e.into()))?;
            if !replaced(&st, &rev) {
                say(&format!(
                    "{name}: serial {} NOT revoked: no new certificate is deployed yet; `certkeeper revoke {name} --reason {}` goes on from here",
                    rev.serial,
                    rev.reason.name()
                ));
                return Ok(if exit == Exit::Ok { Exit::OrderFailed } else { exit });
            }
        }
        rev.step = RevokeStep::Sending;
        rev.ctid = Some(format!("certkeeper-revoke-{}", crate::order::random_hex(12)));
        st.revocation = Some(rev.clone());
        agent.store.save(&st).map_err(|e| failed(e.into()))?;
        crate::order::pause_for_tests(PAUSE_SENDING, &name);
    }
    let id = rev
        .certificate_id
        .or(st.certificate_id)
        .ok_or_else(|| failed(anyhow::anyhow!("the state names no certificate id to revoke at")))?;
    // Resumed or not, the certificate's history first: a serial already revoked (by a run
    // whose answer was lost, or in the SSL Manager) is not revoked again.
    let known = agent
        .client
        .certificate(id)
        .await
        .map_err(|e| failed(anyhow::anyhow!("looking at certificate {id} before the revoke: {e}")))?;
    let already = known.histories.iter().any(|h| {
        h.revoked.is_some()
            && h.serial_number
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case(&rev.serial))
    });
    if !already {
        let ctid = rev.ctid.clone().unwrap_or_default();
        match agent.client.revoke(id, &rev.serial, &ctid).await {
            Ok(()) => crate::order::pause_for_tests(PAUSE_ANSWERED, &name),
            Err(e) if e.outcome_unknown() => {
                return Err(Refusal::new(
                    Exit::Error,
                    format!(
                        "{name}: the answer to the revoke of serial {} was lost: {e}; `certkeeper revoke {name} --reason {}` looks at the certificate before it sends again",
                        rev.serial,
                        rev.reason.name()
                    ),
                ));
            }
            Err(e) => {
                // Refused: nothing was revoked, and the next attempt sends it again.
                rev.step = RevokeStep::Planned;
                st.revocation = Some(rev.clone());
                agent.store.save(&st).map_err(|e| failed(e.into()))?;
                return Err(Refusal::new(
                    Exit::Error,
                    format!("{name}: the API refused the revoke of serial {}: {e}", rev.serial),
                ));
            }
        }
    }
    st.revocation = None;
    st.revoked.push(Revoked {
        serial: rev.serial.clone(),
        reason: rev.reason,
        at: OffsetDateTime::now_utc().unix_timestamp(),
    });
    agent.store.save(&st).map_err(|e| failed(e.into()))?;
    tracing::warn!(cert = %name, serial = %rev.serial, reason = rev.reason.name(), "revoked");
    say(&format!(
        "{name}: revoked serial {} ({}); serial {} is deployed",
        rev.serial,
        rev.reason.name(),
        st.serial.as_deref().unwrap_or("-")
    ));
    Ok(Exit::Ok)
}

/// Whether a certificate other than the one to revoke is live and deployed, with no order or
/// deploy pending.
fn replaced(st: &CertState, rev: &Revocation) -> bool {
    // `st.serial` is the live certificate's once no order is in flight and nothing waits to
    // be deployed.
    st.deployed
        && st.order.is_none()
        && st.pending_deploy.is_none()
        && st.not_served.is_none()
        && st
            .serial
            .as_deref()
            .is_some_and(|s| !s.eq_ignore_ascii_case(&rev.serial))
}
