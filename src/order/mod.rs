//! One certificate's order, end to end, as a journaled state machine.
//!
//! Each step is written durably to the certificate's state file before the side effect it enables
//! (see `store::Step`), so that a run killed at any instant resumes where it stopped. A paid
//! request whose answer was lost is never simply sent again: the agent first looks for it where
//! the API documents it (`reconcile`) and adopts what it finds; only complete searches that find
//! nothing through the grace period let it count as never made, and an ambiguous case waits for
//! the operator ("payment unresolved"). A spend guard caps paid requests per term. Nothing is
//! installed before the delivery is verified, and a failed reload rolls the symlink back.
//!
//! The map: [`Agent::ensure`] starts or resumes an order, `drive` calls one function per step,
//! and three functions here are the only ones that touch the order's course: `begin` (a new
//! journal), `advance` (the next step, written where [`persists`] says) and `end` (the DNS
//! cleanup where [`plan::Ending`] says, the journal dropped). What they may do is decided in
//! `plan` (pure: what is due, the allowed moves, the spend guard); the steps themselves are in
//! `prepare` (key, CSR, prepareOrder), `validate` (the DNS hook and the propagation wait), `send`
//! (the paid request, reconciliation, contacts), `job` (waiting for the job, through `poll`, the
//! agent's one reader of the poll queue) and `install` (download, verify, generation, deploy,
//! rollback).

use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use time::OffsetDateTime;

use crate::api::{self, Client};
use crate::config::{CertConfig, Config};
use crate::store::{CertState, OrderJournal, OrderKind, Step, Store};

pub(crate) mod adopt;
mod install;
mod job;
pub mod plan;
pub(crate) mod poll;
mod prepare;
pub mod reconcile;
mod send;
mod validate;

pub use plan::{Ending, NeedsConsent, decide, facts, next, next_from, paid_in_term, persists, policy_for};

pub use crate::pause::PAUSE_ENV;
pub(crate) use crate::pause::pause_for_tests;

/// The crash-test point between the paid request's answer and its journal entry.
pub const ANSWERED: &str = "answered";

/// What one run did for one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    NothingDue,
    /// A new certificate is live and the reload hook accepted it.
    Deployed { serial: String, generation: u32 },
    /// A new certificate was issued, but the reload hook failed, or (`not_served`) a
    /// `serve_check` address does not hand it out: the old one stays live. From the daemon's
    /// periodic served check, `not_served` with the live serial: a server no longer hands out
    /// what is installed.
    NotDeployed {
        serial: String,
        error: String,
        not_served: bool,
    },
    /// The answer to a paid request was lost and this run could not settle whether it was made:
    /// nothing was sent again; the next run looks again. `unresolved`: past the grace, only the
    /// operator can settle it (`certkeeper resolve`); `newly`: it became so in this run.
    Unsettled {
        unresolved: bool,
        newly: bool,
        message: String,
    },
    /// Something the configuration does not allow waits for the operator (see
    /// [`NeedsConsent`]); nothing was bought. `newly`: it began to wait in this run.
    Waiting { newly: bool, message: String },
    /// The order was made and its job waits for a person to answer the CA's approval mail
    /// (`validation = "email"`): the next run looks again. `newly`: it began to wait in this run.
    AwaitingApproval { newly: bool, message: String },
}

/// Shared by every certificate of one run.
pub struct Agent {
    pub config: Config,
    pub client: Client,
    pub store: Store,
    /// The one reader of the poll queue for all orders of this agent.
    pub(crate) poll: Arc<poll::Dispatcher>,
    contacts: tokio::sync::Mutex<()>,
    /// The roots a delivered chain may end at, parsed at the first delivery of the process.
    anchors: std::sync::OnceLock<crate::x509::TrustAnchors>,
    /// The validation files placed under web roots, by path, with the certificate whose order
    /// holds each: one order at a time per path.
    file_paths: std::sync::Mutex<std::collections::HashMap<std::path::PathBuf, String>>,
}

impl Agent {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let client = Client::new(&config.api).context("setting up the API client")?;
        let store = Store::new(
            &config.store.state_dir,
            &config.store.live_dir,
            config.store.keep_generations,
        );
        let poll = Arc::new(poll::Dispatcher::new(
            client.clone(),
            config.order.poll_interval,
            config.order.poll_interval_max,
        ));
        Ok(Self {
            config,
            client,
            store,
            poll,
            contacts: tokio::sync::Mutex::new(()),
            anchors: std::sync::OnceLock::new(),
            file_paths: Default::default(),
        })
    }

    /// The same roots the API connection trusts (`api.roots` and `api.ca_file`), parsed once.
    pub(crate) fn anchors(&self) -> &crate::x509::TrustAnchors {
        self.anchors.get_or_init(|| {
            crate::x509::TrustAnchors::load(self.config.api.ca_pem.as_deref(), Some(self.config.api.roots))
        })
    }

    /// Brings one certificate up to date: resumes its order in flight, retries a pending deploy,
    /// or starts a new order when one is due (`force`: reissue now).
    pub async fn ensure(&self, cert: &CertConfig, force: bool) -> anyhow::Result<Outcome> {
        self.ensure_with(cert, force, false).await
    }

    /// [`Self::ensure`]; with `forgiven`, the certificate's past failures no longer hold it back
    /// (its configuration changed since): the backoff starts anew from this attempt.
    pub async fn ensure_with(&self, cert: &CertConfig, force: bool, forgiven: bool) -> anyhow::Result<Outcome> {
        // In a fleet, only while this member leads: nothing is asked of the API otherwise.
        #[cfg(feature = "cluster")]
        if self.store.shared {
            crate::cluster::leading().map_err(|e| anyhow!("{}: {e}", cert.name))?;
        }
        let mut st = self
            .store
            .load(&cert.name)
            .with_context(|| format!("reading the state of {}", cert.name))?;
        if forgiven {
            st.failures = 0;
            st.retry_after = None;
        }
        if plan::consent_given(cert, &st) {
            st.failures = 0;
            st.retry_after = None;
        }
        let result = self.ensure_inner(cert, force, &mut st).await;
        let now = OffsetDateTime::now_utc().unix_timestamp();
        match result {
            Err(e) if let Some(consent) = e.chain().find_map(|c| c.downcast_ref::<NeedsConsent>()).cloned() => {
                let message = format!("{e:#}");
                let settings = plan::consent_settings(cert);
                let newly = st
                    .consent
                    .as_ref()
                    .is_none_or(|c| c.what != consent.what || c.settings != settings);
                let since = st.consent.as_ref().filter(|_| !newly).map_or(now, |c| c.since);
                st.consent = Some(crate::store::Consent {
                    what: consent.what,
                    give: consent.give,
                    since,
                    settings,
                });
                // Counted as a setback, so that a wait asks the API (an adoption's search) at
                // the backoff's pace, not at every wake.
                let e = record_failure(&mut st, e, now, |st| self.store.save(st));
                if e.chain().any(|c| c.downcast_ref::<NeedsConsent>().is_some()) {
                    Ok(Outcome::Waiting { newly, message })
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(record_failure(&mut st, e, now, |st| self.store.save(st))),
            Ok(outcome) => Ok(outcome),
        }
    }

    async fn ensure_inner(&self, cert: &CertConfig, force: bool, st: &mut CertState) -> anyhow::Result<Outcome> {
        // Before anything is ordered: a certificate that could not be installed is not bought.
        self.store
            .check_live(&cert.name)
            .with_context(|| format!("the live directory of {}", cert.name))?;
        if let Some(generation) = st.pending_deploy
            && st.order.is_none()
        {
            tracing::info!(cert = %cert.name, generation, "retrying the deploy of an issued certificate");
            let deployed = self.deploy(cert, st, generation).await?;
            // `--renew-now` asks for a reissue: the issued certificate goes live first, then the
            // reissue follows. (A deploy that failed again says so; a reissue would meet the same
            // reload.)
            if !force || !matches!(deployed, Outcome::Deployed { .. }) {
                return Ok(deployed);
            }
        }
        if st.order.is_none() {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let Some(mut kind) = decide(st, cert, &self.config.daemon, now, force)? else {
                return Ok(Outcome::NothingDue);
            };
            // A first order: the account may already hold one for these names.
            if kind == OrderKind::Create && st.certificate_id.is_none() {
                kind = self.adopt_or_buy(cert, st, now).await?;
            }
            // A paid request the spend guard would refuse is not begun: no key, no validation.
            if let Some(spent) = plan::spend_guard(st, kind, cert.max_paid_orders) {
                return Err(NeedsConsent::spend_guard(cert, kind, spent).into());
            }
            match plan::changed(cert, st) {
                Some(why) => {
                    tracing::info!(cert = %cert.name, kind = kind.name(), %why, "starting an order for the certificate as configured now")
                }
                None => tracing::info!(cert = %cert.name, kind = kind.name(), "starting an order"),
            }
            // A forced reissue is a decision the schedule would not make again after a crash.
            self.begin(st, kind, now, force)?;
        } else {
            if let Some(j) = &st.order {
                tracing::info!(cert = %cert.name, kind = j.kind.name(), step = j.step.name(), "resuming the order in flight");
            }
        }
        self.drive(cert, st).await
    }

    /// Before a first (paid) order: adopts the account's order for the names if it holds
    /// exactly one (the order becomes a free reissue), refuses when it holds orders that do
    /// not fit or when `new_orders = "deny"`, and otherwise lets the create go on.
    async fn adopt_or_buy(&self, cert: &CertConfig, st: &mut CertState, now: i64) -> anyhow::Result<OrderKind> {
        match self.find_existing(cert, now).await? {
            adopt::Existing::Adopt { id, term_end, what } => {
                st.certificate_id = Some(id);
                if term_end.is_some() {
                    st.term_end = term_end;
                }
                self.store
                    .save(st)
                    .with_context(|| format!("writing the state of {}", cert.name))?;
                tracing::info!(cert = %cert.name, order = %what, "adopted the account's order; a free reissue gives it a key of certkeeper's own");
                Ok(OrderKind::Reissue)
            }
            adopt::Existing::Choose(why) => Err(NeedsConsent::choice(why).into()),
            adopt::Existing::None { .. } if !cert.new_orders => Err(NeedsConsent::new_order(cert).into()),
            adopt::Existing::None { ended } => {
                for e in ended {
                    tracing::info!(cert = %cert.name, order = %e, "the term of this order has ended; a new order is bought");
                }
                Ok(OrderKind::Create)
            }
        }
    }

    /// Runs the order in flight from its step to its end, one function per step.
    async fn drive(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<Outcome> {
        // An order resumed with its validation files in place holds their paths again.
        if let (crate::config::Validation::File(fv), Some(j)) = (&cert.validation, &st.order)
            && !j.files.is_empty()
            && j.step > Step::Prepared
            && let Err(e) = self.claim_files(cert, fv, &j.files)
        {
            tracing::warn!(cert = %cert.name, error = %format!("{e:#}"), "a validation file of this order is claimed by another");
        }
        for _ in 0..32 {
            match Self::journal(st)?.step {
                Step::Planned => self.make_key(cert, st)?,
                Step::Keyed => self.prepare(cert, st).await?,
                Step::Prepared => self.publish(cert, st).await?,
                Step::DnsPublished => self.wait_for_dns(cert, st).await?,
                Step::DnsVerified => {
                    if let Some(outcome) = self.send(cert, st).await? {
                        return Ok(outcome);
                    }
                }
                Step::Sending => {
                    if let Some(outcome) = self.reconcile(cert, st).await? {
                        return Ok(outcome);
                    }
                }
                Step::Accepted => {
                    if let Some(outcome) = self.wait_for_job(cert, st).await? {
                        return Ok(outcome);
                    }
                }
                Step::JobDone => self.download(cert, st).await?,
                Step::Downloaded => self.verify_and_write(cert, st).await?,
                Step::Installed => return self.install(cert, st).await,
            }
        }
        bail!("the order of {} did not finish within its step bound", cert.name)
    }

    /// Starts a new order at `planned`, written at once when `durable`.
    fn begin(&self, st: &mut CertState, kind: OrderKind, now: i64, durable: bool) -> anyhow::Result<()> {
        // Whatever waited for the operator was given: the order goes on.
        st.consent = None;
        st.order = Some(OrderJournal {
            id: format!("{}-{}", now, random_hex(4)),
            kind,
            step: Step::Planned,
            started_at: now,
            spki_sha256: None,
            key: None,
            csr: None,
            records: Vec::new(),
            files: Vec::new(),
            approver: None,
            awaiting_approval_since: None,
            ctid: None,
            sent_at: None,
            job_id: None,
            certificate_id: None,
            leaf: None,
            chain: Vec::new(),
            generation: None,
            term_end: None,
            sent_boot: None,
            known_certificates: Vec::new(),
            answer_unreadable: false,
            clean_searches: 0,
            unresolved_since: None,
        });
        self.settle(st, Step::Planned, durable)
    }

    /// Moves the order to `step`, the one way its step changes. The journal is written where
    /// [`plan::writes`] says a crash must find it; in between, the order lives in memory and a
    /// crash resumes from the last write.
    fn advance(&self, cert: &CertConfig, st: &mut CertState, step: Step) -> anyhow::Result<()> {
        let j = Self::journal(st)?;
        let from = j.step;
        if !plan::allowed(from, step) {
            bail!(
                "the order of {} cannot move from {} to {}",
                cert.name,
                from.name(),
                step.name()
            );
        }
        j.step = step;
        self.settle(st, step, plan::writes(from, step, cert.publish_mode()))
    }

    /// Writes the journal durably when `write`, then honours the crash-test pause.
    fn settle(&self, st: &CertState, step: Step, write: bool) -> anyhow::Result<()> {
        if write {
            self.store
                .save(st)
                .with_context(|| format!("writing the journal of {}", st.name))?;
        }
        pause_for_tests(step.name(), &st.name);
        Ok(())
    }

    /// Ends the order in flight, the one way an order ends: the DNS cleanup where `ending` calls
    /// for it, the journal (with the order's key) dropped, and the state written unless the
    /// ending leaves that to its caller.
    async fn end(&self, cert: &CertConfig, st: &mut CertState, ending: Ending) -> anyhow::Result<()> {
        let Some(j) = st.order.take() else { return Ok(()) };
        if plan::dns_cleanup(ending, j.step, cert.publish_mode()) {
            self.clean_dns(cert, &j.records).await;
        }
        // Validation files go whatever the configuration says now (it may have changed since).
        if !j.files.is_empty() && plan::dns_cleanup(ending, j.step, crate::config::DnsMode::Hook) {
            self.clean_files(cert, &j.files).await;
        }
        if ending.writes() {
            self.store.save(st)?;
        }
        Ok(())
    }

    fn journal(st: &mut CertState) -> anyhow::Result<&mut OrderJournal> {
        st.order.as_mut().ok_or_else(|| anyhow!("no order in flight"))
    }

    /// Whether `ensure` has anything to do for `cert` at `now` (an unreadable state or an ended
    /// term count as due, so that `ensure` reports them).
    pub fn is_due(&self, look: Option<&crate::store::Look>, cert: &CertConfig, now: i64) -> bool {
        match self.store.load_from(look, &cert.name) {
            Ok(st) if st.order.is_none() && st.pending_deploy.is_none() => {
                !matches!(decide(&st, cert, &self.config.daemon, now, false), Ok(None))
            }
            _ => true,
        }
    }
}

/// The host name, part of the jitter seed; read once.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// Notes a failure in the state (error, count, time, the API's Retry-After) and saves it. A save
/// that fails is not passed over: it is logged and added to the error, since without the record
/// the next run does not know to back off (the daemon also remembers failures in memory).
fn record_failure(
    st: &mut CertState,
    e: anyhow::Error,
    now: i64,
    save: impl FnOnce(&CertState) -> std::io::Result<()>,
) -> anyhow::Error {
    st.last_error = Some(format!("{e:#}"));
    st.failures += 1;
    st.last_failure = Some(now);
    st.retry_after = e
        .chain()
        .find_map(|c| c.downcast_ref::<api::Error>())
        .and_then(api::Error::retry_after)
        .map(|d| now + d.as_secs() as i64);
    match save(st) {
        Ok(()) => e,
        Err(save_error) => {
            tracing::error!(cert = %st.name, error = %save_error, "the failure could not be recorded in the state file");
            anyhow!("{e:#}; and recording this failure in the state file failed: {save_error}")
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex(&bytes)
}

#[cfg(test)]
mod record_tests {
    use super::*;

    #[test]
    fn a_failure_that_cannot_be_recorded_says_so() {
        let mut st = CertState::default();
        let e = record_failure(&mut st, anyhow!("the API refused"), 1_800_000_000, |_| {
            Err(std::io::Error::other("disk full"))
        });
        let text = format!("{e:#}");
        assert!(
            text.contains("the API refused") && text.contains("recording this failure") && text.contains("disk full"),
            "{text}"
        );
        assert_eq!((st.failures, st.last_failure), (1, Some(1_800_000_000)));
        let mut saved = None;
        let e = record_failure(&mut st, anyhow!("again"), 1_800_000_060, |s| {
            saved = Some(s.failures);
            Ok(())
        });
        assert_eq!((format!("{e:#}"), saved), ("again".to_string(), Some(2)));
    }
}
