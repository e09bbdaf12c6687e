//! One certificate's order, end to end, as a journaled state machine.
//!
//! Each step is written durably to the certificate's state file before the side effect it enables
//! (see `store::Step`), so that a run killed at any instant resumes where it stopped. A paid
//! request whose answer was lost is never simply sent again: the agent first searches the API's
//! jobs for its ctid and adopts what it finds; only when nothing appears within the grace period
//! does the request count as never made. A spend guard caps paid requests per term. Nothing is
//! installed before the delivery is verified, and a failed reload rolls the symlink back.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::api::wire::{ContactRef, OrderAuthentication, OrderRequest, TimePeriod, object_certificate_id, parse_time};
use crate::api::{self, Client};
use crate::config::{CertConfig, Config, ContactSpec, DaemonConfig, DnsMode};
use crate::dns::{self, DcvRecord};
use crate::hooks;
use crate::keys::PrivateKey;
use crate::store::{CertState, KeyPem, OrderJournal, OrderKind, PaidRequest, Step, Store};
use crate::{schedule, x509};

/// The environment variable that makes certkeeper stop (and wait to be killed) right after the
/// journal reached the named step. For crash tests only.
pub const PAUSE_ENV: &str = "CERTKEEPER_TEST_PAUSE_AT";

/// What one run did for one certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due.
    NothingDue,
    /// A new certificate is live and the reload hook accepted it.
    Deployed { serial: String, generation: u32 },
    /// A new certificate was issued, but the reload hook failed: the old one stays live.
    NotDeployed { serial: String, error: String },
}

/// Shared by every certificate of one run.
pub struct Agent {
    pub config: Config,
    pub client: Client,
    pub store: Store,
    finished_jobs: std::sync::Mutex<HashSet<i64>>,
    contacts: tokio::sync::Mutex<()>,
}

impl Agent {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let client = Client::new(&config.api).context("setting up the API client")?;
        let store = Store::new(
            &config.store.state_dir,
            &config.store.live_dir,
            config.store.keep_generations,
        );
        Ok(Self {
            config,
            client,
            store,
            finished_jobs: Default::default(),
            contacts: tokio::sync::Mutex::new(()),
        })
    }

    /// Brings one certificate up to date: resumes its order in flight, retries a pending deploy,
    /// or starts a new order when one is due (`force`: reissue now).
    pub async fn ensure(&self, cert: &CertConfig, force: bool) -> anyhow::Result<Outcome> {
        let mut st = self
            .store
            .load(&cert.name)
            .with_context(|| format!("reading the state of {}", cert.name))?;
        let result = self.ensure_inner(cert, force, &mut st).await;
        if let Err(e) = &result {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            st.last_error = Some(format!("{e:#}"));
            st.failures += 1;
            st.last_failure = Some(now);
            st.retry_after = e
                .chain()
                .find_map(|c| c.downcast_ref::<api::Error>())
                .and_then(api::Error::retry_after)
                .map(|d| now + d.as_secs() as i64);
            let _ = self.store.save(&st);
        }
        result
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
            return self.deploy(cert, st, generation).await;
        }
        if st.order.is_none() {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let Some(kind) = decide(st, cert, &self.config.daemon, now, force)? else {
                return Ok(Outcome::NothingDue);
            };
            tracing::info!(cert = %cert.name, ?kind, "starting an order");
            st.order = Some(OrderJournal {
                id: format!("{}-{}", now, random_hex(4)),
                kind,
                step: Step::Planned,
                started_at: now,
                spki_sha256: None,
                key: None,
                csr: None,
                records: Vec::new(),
                ctid: None,
                sent_at: None,
                job_id: None,
                certificate_id: None,
                leaf: None,
                chain: Vec::new(),
                generation: None,
                term_end: None,
            });
            // A forced reissue is a decision the schedule would not make again after a crash.
            if force {
                self.commit(st, Step::Planned)?;
            } else {
                pause_for_tests(Step::Planned.name(), &st.name);
            }
        } else {
            let j = st.order.as_ref().map(|j| (j.kind, j.step));
            tracing::info!(cert = %cert.name, ?j, "resuming the order in flight");
        }
        self.drive(cert, st).await
    }

    /// Writes the journal durably, then honours the crash-test pause.
    fn commit(&self, st: &CertState, step: Step) -> anyhow::Result<()> {
        self.store
            .save(st)
            .with_context(|| format!("writing the journal of {}", st.name))?;
        pause_for_tests(step.name(), &st.name);
        Ok(())
    }

    /// Moves the order to `step`, writing the journal only where [`persists`] says a crash must
    /// find it; in between, the order lives in memory and a crash resumes from the last write.
    fn reach(&self, cert: &CertConfig, st: &mut CertState, step: Step) -> anyhow::Result<()> {
        Self::journal(st)?.step = step;
        if persists(step, cert.dns) {
            self.commit(st, step)
        } else {
            pause_for_tests(step.name(), &st.name);
            Ok(())
        }
    }

    fn journal(st: &mut CertState) -> anyhow::Result<&mut OrderJournal> {
        st.order.as_mut().ok_or_else(|| anyhow!("no order in flight"))
    }

    async fn drive(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<Outcome> {
        let name = cert.name.clone();
        for _ in 0..32 {
            let j = Self::journal(st)?.clone();
            match j.step {
                Step::Planned => {
                    let key = PrivateKey::generate(cert.key).context("generating a key")?;
                    let csr = key.csr(&cert.all_names()).context("building the CSR")?;
                    let jm = Self::journal(st)?;
                    jm.spki_sha256 = Some(hex(&Sha256::digest(key.public_key_der())));
                    jm.key = Some(KeyPem(key.pem().to_string()));
                    jm.csr = Some(csr.single_line());
                    self.reach(cert, st, Step::Keyed)?;
                }
                Step::Keyed => {
                    let csr = j.csr.clone().ok_or_else(|| anyhow!("the journal lost the CSR"))?;
                    let case = match j.kind {
                        OrderKind::Create => "CREATE",
                        OrderKind::Reissue => "REISSUE",
                        OrderKind::Renew => "RENEW",
                    };
                    let prepared = self
                        .client
                        .prepare_order(
                            &csr,
                            &cert.product,
                            case,
                            st.certificate_id.filter(|_| j.kind != OrderKind::Create),
                        )
                        .await
                        .context("prepareOrder")?;
                    // Checked before any hook runs or anything is paid: the line comes from
                    // the network and its parts reach the DNS hook.
                    let names = cert.all_names();
                    let records = prepared
                        .dns_lines
                        .iter()
                        .map(|(_, line)| dns::read_dcv_line(line, &names))
                        .collect::<Result<Vec<_>, _>>()
                        .with_context(|| format!("refused prepareOrder's authentication.dns for {name}"))?;
                    if records.is_empty() {
                        bail!("prepareOrder offered no DNS validation for {} {}", cert.product, name);
                    }
                    Self::journal(st)?.records = records;
                    self.reach(cert, st, Step::Prepared)?;
                }
                Step::Prepared => {
                    if cert.dns == DnsMode::Hook {
                        let names = cert.all_names();
                        for rec in &j.records {
                            rec.check(&names)
                                .with_context(|| format!("refused the journal's validation record for {name}"))?;
                            hooks::run(
                                &dns_hook_argv(cert, "present"),
                                &record_env(&name, rec),
                                cert.hook_timeout,
                            )
                            .await
                            .with_context(|| format!("the DNS hook could not publish {} {}", rec.name, rec.kind))?;
                        }
                    }
                    self.reach(cert, st, Step::DnsPublished)?;
                }
                Step::DnsPublished => {
                    if cert.dns == DnsMode::Hook {
                        dns::wait_until_served(&j.records, &self.config.dns, self.config.dns.propagation_timeout)
                            .await?;
                    }
                    self.reach(cert, st, Step::DnsVerified)?;
                }
                Step::DnsVerified => {
                    self.send(cert, st).await?;
                }
                Step::Sending => {
                    self.reconcile(cert, st).await?;
                }
                Step::Accepted => {
                    self.wait_for_job(cert, st).await?;
                }
                Step::JobDone => {
                    let id = j
                        .certificate_id
                        .or(st.certificate_id)
                        .ok_or_else(|| anyhow!("the job named no certificate id"))?;
                    let c = self
                        .client
                        .certificate(id)
                        .await
                        .with_context(|| format!("fetching certificate {id}"))?;
                    let leaf = c
                        .server
                        .clone()
                        .filter(|s| s.contains("BEGIN CERTIFICATE"))
                        .ok_or_else(|| anyhow!("certificate {id} holds no issued certificate yet"))?;
                    let chain: Vec<String> = c
                        .certification_authority
                        .iter()
                        .filter_map(|ca| ca.ca_certificate.clone())
                        .collect();
                    let jm = Self::journal(st)?;
                    jm.leaf = Some(leaf);
                    jm.chain = chain;
                    jm.term_end = c.payable.as_deref().and_then(parse_time).map(|t| t.unix_timestamp());
                    st.certificate_id = Some(id);
                    if let Some(t) = st.order.as_ref().and_then(|j| j.term_end) {
                        st.term_end = Some(t);
                    }
                    self.reach(cert, st, Step::Downloaded)?;
                }
                Step::Downloaded => {
                    let pem = j
                        .key
                        .as_ref()
                        .ok_or_else(|| anyhow!("the journal lost the order's key"))?;
                    let key = PrivateKey::from_pem(&pem.0).context("reading the order's key")?;
                    let spki = key.public_key_der();
                    let leaf = j.leaf.clone().unwrap_or_default();
                    // The same roots the API connection trusts: the system store and ca_file.
                    let anchors = x509::TrustAnchors::load(self.config.api.ca_pem.as_deref(), true);
                    let verified = x509::verify(
                        &leaf,
                        &j.chain,
                        &spki,
                        &cert.all_names(),
                        OffsetDateTime::now_utc(),
                        &anchors,
                    );
                    match verified {
                        Ok(x509::Verified {
                            info,
                            leaf_pem,
                            intermediates_pem,
                        }) => {
                            // Exactly what was verified, re-encoded: chain.pem holds the
                            // intermediates; the root is left out, as servers expect.
                            let generation = self
                                .store
                                .write_generation(&name, key.pem(), &leaf_pem, &intermediates_pem)
                                .context("writing the new generation")?;
                            tracing::info!(cert = %name, serial = %info.serial, not_after = %info.not_after, generation = generation.number, "certificate verified and written");
                            st.serial = Some(info.serial);
                            st.not_before = Some(info.not_before.unix_timestamp());
                            st.not_after = Some(info.not_after.unix_timestamp());
                            Self::journal(st)?.generation = Some(generation.number);
                            self.reach(cert, st, Step::Installed)?;
                        }
                        Err(e) => {
                            self.end_order(cert, st).await;
                            self.store.save(st)?;
                            bail!(
                                "refused the delivered certificate for {name}: {e}; the installed files were left as they were"
                            );
                        }
                    }
                }
                Step::Installed => {
                    let generation = j.generation.ok_or_else(|| anyhow!("the journal lost the generation"))?;
                    self.end_order(cert, st).await;
                    // Not written here: `deploy` writes the outcome, and a crash before that
                    // resumes from `installed`, whose cleanup and switch are safe to repeat.
                    st.pending_deploy = Some(generation);
                    return self.deploy(cert, st, generation).await;
                }
            }
        }
        bail!("the order of {name} did not finish within its step bound")
    }

    /// Sends the create, reissue or renew request once, journaled first.
    async fn send(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let term = if j.kind == OrderKind::Renew {
            st.term_end.unwrap_or(0)
        } else {
            0
        };
        if j.kind.is_paid() {
            let spent = st
                .paid
                .iter()
                .filter(|p| p.kind == j.kind && p.term == term && p.status != "not_made")
                .count();
            if spent >= cert.max_paid_orders as usize {
                let kind = j.kind;
                st.order = None;
                self.store.save(st)?;
                bail!(
                    "spend guard: {spent} paid {kind:?} request(s) for {} in this term already; raise max_paid_orders to allow another",
                    cert.name
                );
            }
        }
        let ctid = format!("certkeeper-{}", random_hex(12));
        let now = OffsetDateTime::now_utc().unix_timestamp();
        if j.kind.is_paid() {
            st.paid.push(PaidRequest {
                kind: j.kind,
                ctid: ctid.clone(),
                sent_at: now,
                term,
                status: "sent".into(),
                job_id: None,
            });
        }
        let jm = Self::journal(st)?;
        jm.ctid = Some(ctid.clone());
        jm.sent_at = Some(now);
        self.reach(cert, st, Step::Sending)?;

        let body = self.order_body(cert, st).await?;
        let id = st.certificate_id;
        let result = match (j.kind, id) {
            (OrderKind::Create, _) => self.client.create(&body, &ctid).await,
            (OrderKind::Reissue, Some(id)) => self.client.reissue(id, &body, &ctid).await,
            (OrderKind::Renew, Some(id)) => self.client.renew(id, &body, &ctid).await,
            (_, None) => Err(api::Error::Refused {
                http: 0,
                code: "local".into(),
                text: "no certificate id to reissue or renew".into(),
                messages: vec![],
            }),
        };
        pause_for_tests("answered", &cert.name);
        match result {
            Ok(job_id) => self.accept(st, job_id),
            Err(e) if e.outcome_unknown() => {
                tracing::warn!(cert = %cert.name, %ctid, error = %e, "the answer to the order was lost; reconciling before anything else");
                self.reconcile(cert, st).await
            }
            Err(e) => {
                if let Some(p) = st.paid.iter_mut().find(|p| p.ctid == ctid) {
                    p.status = "not_made".into();
                }
                self.end_order(cert, st).await;
                self.store.save(st)?;
                Err(anyhow!(e).context(format!("ordering {}", cert.name)))
            }
        }
    }

    fn accept(&self, st: &mut CertState, job_id: i64) -> anyhow::Result<()> {
        let ctid = Self::journal(st)?.ctid.clone();
        if let Some(p) = st.paid.iter_mut().find(|p| Some(&p.ctid) == ctid.as_ref()) {
            p.status = "accepted".into();
            p.job_id = Some(job_id);
        }
        let jm = Self::journal(st)?;
        jm.job_id = Some(job_id);
        jm.step = Step::Accepted;
        tracing::info!(cert = %st.name, job_id, "order accepted");
        self.commit(st, Step::Accepted)
    }

    /// Finds the job a request with a lost answer started, by its ctid. Gives up after the
    /// grace period, and only then lets the request count as never made.
    async fn reconcile(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let ctid = j.ctid.clone().ok_or_else(|| anyhow!("the journal lost the ctid"))?;
        let sent_at = j.sent_at.unwrap_or(j.started_at);
        let since = OffsetDateTime::from_unix_timestamp(sent_at - 120).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let grace = self.config.order.reconcile_grace;
        let mut pause = self.config.order.poll_interval;
        for round in 0u32.. {
            match self.client.search_jobs(&cert.name, since).await {
                Ok(jobs) => {
                    if let Some(found) = jobs
                        .iter()
                        .find(|oj| oj.job.events.iter().any(|e| e.ctid.as_deref() == Some(ctid.as_str())))
                    {
                        tracing::info!(cert = %cert.name, %ctid, job_id = found.job.id, "found the order the lost answer belonged to");
                        if let Some(id) = object_certificate_id(&found.object) {
                            st.certificate_id.get_or_insert(id);
                        }
                        return self.accept(st, found.job.id);
                    }
                }
                Err(e) => tracing::warn!(cert = %cert.name, error = %e, "searching for the order failed"),
            }
            let waited = OffsetDateTime::now_utc().unix_timestamp() - sent_at;
            if waited as f64 >= grace.as_secs_f64() {
                tracing::warn!(cert = %cert.name, %ctid, waited, "no trace of the order after the grace period: it never arrived");
                if let Some(p) = st.paid.iter_mut().find(|p| p.ctid == ctid) {
                    p.status = "not_made".into();
                }
                let jm = Self::journal(st)?;
                jm.ctid = None;
                jm.sent_at = None;
                jm.step = Step::DnsVerified;
                return self.commit(st, Step::DnsVerified);
            }
            if round > 10_000 {
                break;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(self.config.order.poll_interval_max);
        }
        bail!("reconciliation of {} did not end", cert.name)
    }

    /// Waits for the job through the poll queue, falling back to `GET /job/{id}` so that messages
    /// about other jobs never block. A message is confirmed only after our state is on disk.
    async fn wait_for_job(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let job_id = Self::journal(st)?
            .job_id
            .ok_or_else(|| anyhow!("the journal lost the job id"))?;
        let deadline = tokio::time::Instant::now() + self.config.order.job_timeout;
        let mut pause = self.config.order.poll_interval;
        let records = Self::journal(st)?.records.clone();
        let mut rounds = 0u32;
        loop {
            rounds += 1;
            if cert.dns == DnsMode::Autodns && (rounds == 3 || rounds.is_multiple_of(20)) {
                self.log_dns_view(&cert.name, &records).await;
            }
            tokio::time::sleep(pause).await;
            let mut status: Option<(String, Option<i64>, String)> = None;
            let mut confirm = None;
            match self.client.poll().await {
                Ok(Some(msg)) => {
                    let about = msg.job.as_ref().map(|j| j.id);
                    if about == Some(job_id) {
                        let s = msg.job.as_ref().and_then(|j| j.status.clone()).unwrap_or_default();
                        let reason = msg
                            .messages
                            .iter()
                            .filter_map(|m| m.text.as_deref().map(crate::text::printable))
                            .collect::<Vec<_>>()
                            .join("; ");
                        status = Some((s, object_certificate_id(&msg.object), reason));
                        confirm = Some(msg.id);
                    } else if about.is_some_and(|id| self.finished_jobs.lock().is_ok_and(|f| f.contains(&id))) {
                        // A leftover message about one of our finished jobs.
                        let _ = self.client.confirm(msg.id).await;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::debug!(error = %e, "poll failed"),
            }
            if status.is_none() {
                match self.client.job(job_id).await {
                    Ok(oj) => {
                        let s = oj.job.status.clone().unwrap_or_default();
                        status = Some((s, object_certificate_id(&oj.object), String::new()));
                    }
                    Err(e) => tracing::debug!(job_id, error = %e, "job info failed"),
                }
            }
            match status {
                Some((s, cert_id, _)) if s == "SUCCESS" => {
                    let jm = Self::journal(st)?;
                    jm.certificate_id = cert_id.or(jm.certificate_id);
                    jm.step = Step::JobDone;
                    if let Some(id) = cert_id {
                        st.certificate_id = Some(id);
                    }
                    self.commit(st, Step::JobDone)?;
                    if let Ok(mut f) = self.finished_jobs.lock() {
                        f.insert(job_id);
                    }
                    if let Some(m) = confirm {
                        let _ = self.client.confirm(m).await;
                    }
                    return Ok(());
                }
                Some((s, cert_id, reason)) if matches!(s.as_str(), "FAILED" | "CANCELED") => {
                    if let Some(id) = cert_id {
                        st.certificate_id.get_or_insert(id);
                    }
                    self.end_order(cert, st).await;
                    self.store.save(st)?;
                    if let Ok(mut f) = self.finished_jobs.lock() {
                        f.insert(job_id);
                    }
                    if let Some(m) = confirm {
                        let _ = self.client.confirm(m).await;
                    }
                    let reason = if reason.is_empty() {
                        String::from("no reason given")
                    } else {
                        reason
                    };
                    bail!("job {job_id} for {} ended {s}: {reason}", cert.name);
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "job {job_id} for {} is still running after {:?}; the next run picks it up",
                    cert.name,
                    self.config.order.job_timeout
                );
            }
            pause = (pause * 2).min(self.config.order.poll_interval_max);
        }
    }

    /// For diagnostics while AutoDNS provisions the record: what each authoritative server serves.
    async fn log_dns_view(&self, name: &str, records: &[DcvRecord]) {
        for rec in records {
            let view = tokio::time::timeout(Duration::from_secs(5), async {
                let servers = dns::authoritative_servers(&rec.name, &self.config.dns).await?;
                let mut served = 0;
                for s in &servers {
                    if dns::ask(*s, rec).await == dns::Answer::Served {
                        served += 1;
                    }
                }
                Ok::<_, dns::DnsError>((served, servers.len()))
            })
            .await;
            match view {
                Ok(Ok((served, total))) => {
                    tracing::info!(cert = %name, record = %rec.name, served, total, "the job waits; the validation record is served by {served} of {total} authoritative nameservers")
                }
                Ok(Err(e)) => {
                    tracing::info!(cert = %name, record = %rec.name, error = %e, "the job waits; the validation record could not be looked up")
                }
                Err(_) => {
                    tracing::info!(cert = %name, record = %rec.name, "the job waits; the nameservers did not answer in time")
                }
            }
        }
    }

    /// Ends the order in flight: DNS cleanup, journal (with the order's key) dropped.
    async fn end_order(&self, cert: &CertConfig, st: &mut CertState) {
        let Some(j) = st.order.take() else { return };
        if cert.dns == DnsMode::Hook && j.step >= Step::Prepared {
            let names = cert.all_names();
            for rec in &j.records {
                if let Err(e) = rec.check(&names) {
                    tracing::warn!(cert = %cert.name, error = %e, "no DNS cleanup for a record that fails its check");
                    continue;
                }
                if let Err(e) = hooks::run(
                    &dns_hook_argv(cert, "cleanup"),
                    &record_env(&cert.name, rec),
                    cert.hook_timeout,
                )
                .await
                {
                    tracing::warn!(cert = %cert.name, record = %rec.name, error = %e, "DNS cleanup failed");
                }
            }
        }
    }

    /// Switches the live symlink to `generation` and runs the reload hook; on failure switches
    /// back and runs the hook again, so the server keeps a working pair.
    async fn deploy(&self, cert: &CertConfig, st: &mut CertState, generation: u32) -> anyhow::Result<Outcome> {
        let name = &cert.name;
        let previous = self.store.live_generation(name).filter(|g| *g != generation);
        self.store
            .switch(name, generation)
            .context("switching the live symlink")?;
        let serial = st.serial.clone().unwrap_or_default();
        let result = if cert.reload.is_empty() {
            Ok(())
        } else {
            hooks::run(&cert.reload, &self.reload_env(cert, st), cert.hook_timeout).await
        };
        match result {
            Ok(()) => {
                st.generation = Some(generation);
                st.deployed = true;
                st.pending_deploy = None;
                st.last_error = None;
                st.failures = 0;
                st.last_success = Some(OffsetDateTime::now_utc().unix_timestamp());
                self.store.save(st)?;
                let protect: Vec<u32> = [Some(generation), previous].into_iter().flatten().collect();
                if let Err(e) = self.store.prune(name, &protect) {
                    tracing::warn!(cert = %name, error = %e, "cannot remove old generations");
                }
                tracing::info!(cert = %name, %serial, generation, "certificate deployed");
                Ok(Outcome::Deployed { serial, generation })
            }
            Err(e) => {
                let error = format!("the reload hook failed: {e}");
                tracing::error!(cert = %name, %error, ?previous, "rolling back to the previous certificate");
                if let Some(p) = previous {
                    self.store.switch(name, p).context("switching the live symlink back")?;
                    if let Err(e2) = hooks::run(&cert.reload, &self.reload_env(cert, st), cert.hook_timeout).await {
                        tracing::error!(cert = %name, error = %e2, "the reload hook failed again after the rollback");
                    }
                }
                st.generation = previous;
                st.deployed = false;
                st.pending_deploy = Some(generation);
                st.last_error = Some(error.clone());
                // A failed deploy is a failure like any other: counted, so that the schedule
                // backs off (1 m, 10 m, ...) instead of retrying the hook at once, for ever.
                st.failures += 1;
                st.last_failure = Some(OffsetDateTime::now_utc().unix_timestamp());
                self.store.save(st)?;
                Ok(Outcome::NotDeployed { serial, error })
            }
        }
    }

    /// Whether `ensure` has anything to do for `cert` at `now` (an unreadable state or an ended
    /// term count as due, so that `ensure` reports them).
    pub fn is_due(&self, cert: &CertConfig, now: i64) -> bool {
        match self.store.load(&cert.name) {
            Ok(st) if st.order.is_none() && st.pending_deploy.is_none() => {
                !matches!(decide(&st, cert, &self.config.daemon, now, false), Ok(None))
            }
            _ => true,
        }
    }

    fn reload_env(&self, cert: &CertConfig, st: &CertState) -> hooks::Env {
        hooks::ReloadEnv {
            name: &cert.name,
            live: &self.store.live_dir.join(&cert.name),
            serial: st.serial.as_deref(),
            not_after: st.not_after,
        }
        .vars()
    }

    async fn order_body(&self, cert: &CertConfig, st: &CertState) -> anyhow::Result<OrderRequest> {
        let j = st.order.as_ref().ok_or_else(|| anyhow!("no order in flight"))?;
        let dns_line = j
            .records
            .iter()
            .find(|r| r.name.trim_end_matches('.') == cert.name)
            .or(j.records.first())
            .map(|r| r.zone_line.clone());
        Ok(OrderRequest {
            id: if j.kind == OrderKind::Create {
                None
            } else {
                st.certificate_id
            },
            name: cert.name.clone(),
            product: cert.product.clone(),
            lifetime: TimePeriod {
                unit: "MONTH",
                period: cert.lifetime_months,
            },
            software: cert.software.clone(),
            csr: j.csr.clone().unwrap_or_default(),
            admin_contact: ContactRef {
                id: self.contact_id(&cert.admin_contact).await?,
            },
            technical_contact: ContactRef {
                id: self.contact_id(&cert.technical_contact).await?,
            },
            authentication: OrderAuthentication {
                method: "DNS",
                dns: dns_line,
                provisioning: cert.dns == DnsMode::Autodns,
            },
        })
    }

    /// A contact's id: given, or created once from details and remembered in the state directory.
    async fn contact_id(&self, spec: &ContactSpec) -> anyhow::Result<i64> {
        let details = match spec {
            ContactSpec::Id(id) => return Ok(*id),
            ContactSpec::Details(d) => d,
        };
        let _guard = self.contacts.lock().await;
        let key = hex(&Sha256::digest(serde_json::to_vec(details.as_ref())?));
        let path = self.store.contacts_path();
        let mut known: BTreeMap<String, i64> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Some(id) = known.get(&key) {
            return Ok(*id);
        }
        let id = self
            .client
            .create_contact(details)
            .await
            .context("creating an SSL contact")?;
        known.insert(key, id);
        self.store.write_contacts(&serde_json::to_vec_pretty(&known)?)?;
        tracing::info!(contact = id, "created an SSL contact from the configured details");
        Ok(id)
    }
}

/// The schedule's policy for a certificate under the daemon settings.
pub fn policy_for(cert: &CertConfig, daemon: &DaemonConfig) -> schedule::Policy {
    schedule::Policy {
        renew_before: cert.renew_before,
        renew_term: cert.renew_term,
        term_warning: daemon.term_warning,
        backoff: daemon.retry_backoff.clone(),
        jitter_share: daemon.jitter,
    }
}

/// The schedule's view of a certificate's state.
pub fn facts(st: &CertState) -> schedule::Facts {
    schedule::Facts {
        has_order: st.certificate_id.is_some(),
        in_flight: st.order.is_some() || st.pending_deploy.is_some(),
        // A certificate issued but never installed does not count: it must be deployed first.
        not_before: st
            .not_before
            .filter(|_| st.generation.is_some() || st.pending_deploy.is_some()),
        not_after: st
            .not_after
            .filter(|_| st.generation.is_some() || st.pending_deploy.is_some()),
        term_end: st.term_end,
        failures: st.failures,
        last_failure: st.last_failure,
        retry_after: st.retry_after,
    }
}

/// The host name, part of the jitter seed.
pub fn host_name() -> &'static str {
    static HOST: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// The schedule's next decision for a certificate: when it is due, and for what. The one place
/// that puts a certificate's facts, policy and jitter seed together.
pub fn next(cert: &CertConfig, st: &CertState, daemon: &DaemonConfig, now: i64) -> schedule::Decision {
    next_from(&facts(st), cert, daemon, now)
}

/// [`next`] from facts the caller adjusted (the daemon knows failures its state file may not).
pub fn next_from(facts: &schedule::Facts, cert: &CertConfig, daemon: &DaemonConfig, now: i64) -> schedule::Decision {
    schedule::next(
        now,
        facts,
        &policy_for(cert, daemon),
        schedule::jitter_seed(host_name(), &cert.name),
    )
}

/// What to do now for one certificate, if anything (`force`: reissue now, whatever the schedule).
pub fn decide(
    st: &CertState,
    cert: &CertConfig,
    daemon: &DaemonConfig,
    now: i64,
    force: bool,
) -> anyhow::Result<Option<OrderKind>> {
    let mut f = facts(st);
    if force {
        f.failures = 0;
        f.retry_after = None;
    }
    let d = next_from(&f, cert, daemon, now);
    let kind = match d.action {
        schedule::Action::Create => OrderKind::Create,
        schedule::Action::Renew => OrderKind::Renew,
        schedule::Action::Reissue | schedule::Action::Resume => OrderKind::Reissue,
        schedule::Action::TermEnded if force && st.term_end.is_some_and(|t| now < t) => OrderKind::Reissue,
        schedule::Action::TermEnded => bail!(
            "the order term of {} has ended (or ends before a reissue could help); set renew_term = true to buy the next term (paid), or renew it in the SSL Manager",
            cert.name
        ),
    };
    if force || d.at <= now { Ok(Some(kind)) } else { Ok(None) }
}

/// Whether the journal must be on disk when an order reaches `step`. It must before a DNS hook
/// runs and after it ran (hook mode), before a request that may cost money leaves, once the API
/// holds a job of ours, before that job's poll message is confirmed, and once the generation is
/// written. The steps in between (a key in memory, prepareOrder, a DNS check, the download) are
/// free to redo, so a crash there resumes from the last step written.
pub fn persists(step: Step, dns: DnsMode) -> bool {
    match step {
        Step::Planned | Step::Keyed | Step::DnsVerified | Step::Downloaded => false,
        Step::Prepared | Step::DnsPublished => dns == DnsMode::Hook,
        Step::Sending | Step::Accepted | Step::JobDone | Step::Installed => true,
    }
}

/// The crash tests' hook: with `CERTKEEPER_TEST_PAUSE_AT=POINT` (a step's name, or `answered`:
/// the order's answer is here but not yet journaled), stops there so that a test can kill the
/// process at that point.
fn pause_for_tests(point: &str, name: &str) {
    if std::env::var_os(PAUSE_ENV).is_some_and(|v| v == point) {
        eprintln!("certkeeper: paused at {point} for {name}");
        std::thread::sleep(Duration::from_secs(120));
        std::process::exit(99);
    }
}

/// Paid requests of `kind` for `term` that were accepted or may have been (answer lost).
pub fn paid_in_term(st: &CertState, kind: OrderKind, term: i64) -> usize {
    st.paid
        .iter()
        .filter(|p| p.kind == kind && p.term == term && p.status != "not_made")
        .count()
}

fn dns_hook_argv(cert: &CertConfig, action: &str) -> Vec<String> {
    let mut argv = cert.dns_hook.clone();
    argv.push(action.to_string());
    argv
}

fn record_env(name: &str, rec: &DcvRecord) -> hooks::Env {
    hooks::DnsRecordEnv { name, record: rec }.vars()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(n: usize) -> String {
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    hex(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ContactSpec, DnsMode, KeyKind, RenewBefore};

    fn daemon() -> DaemonConfig {
        DaemonConfig {
            retry_backoff: schedule::default_backoff(),
            term_warning: Duration::from_secs(30 * 86_400),
            jitter: 0.0,
            metrics_listen: None,
            on_failure: vec![],
        }
    }

    fn decide(st: &CertState, c: &CertConfig, now: i64, force: bool) -> anyhow::Result<Option<OrderKind>> {
        super::decide(st, c, &daemon(), now, force)
    }

    fn cert(renew_term: bool) -> CertConfig {
        CertConfig {
            name: "www.example.com".into(),
            alt_names: vec![],
            product: "QUICKSSLPREMIUM".into(),
            lifetime_months: 12,
            software: "APACHESSL".into(),
            key: KeyKind::EcdsaP256,
            admin_contact: ContactSpec::Id(1),
            technical_contact: ContactSpec::Id(1),
            dns: DnsMode::Autodns,
            dns_hook: vec![],
            reload: vec![],
            renew_before: RenewBefore::Share(1.0 / 3.0),
            renew_term,
            max_paid_orders: 1,
            hook_timeout: Duration::from_secs(60),
        }
    }

    const DAY: i64 = 86_400;

    fn issued(now: i64, days_left: i64, term_days_left: i64) -> CertState {
        CertState {
            certificate_id: Some(7),
            not_before: Some(now - (90 - days_left) * DAY),
            not_after: Some(now + days_left * DAY),
            term_end: Some(now + term_days_left * DAY),
            generation: Some(1),
            deployed: true,
            ..CertState::default()
        }
    }

    #[test]
    fn a_new_certificate_is_created_and_a_failed_create_is_reissued() {
        let now = 1_800_000_000;
        assert_eq!(
            decide(&CertState::default(), &cert(false), now, false).unwrap(),
            Some(OrderKind::Create)
        );
        let failed = CertState {
            certificate_id: Some(7),
            ..CertState::default()
        };
        assert_eq!(
            decide(&failed, &cert(false), now, false).unwrap(),
            Some(OrderKind::Reissue)
        );
    }

    #[test]
    fn reissue_only_inside_the_window_or_when_forced() {
        let now = 1_800_000_000;
        // 90-day certificates: the window opens with 30 days left.
        assert_eq!(decide(&issued(now, 60, 300), &cert(false), now, false).unwrap(), None);
        assert_eq!(
            decide(&issued(now, 60, 300), &cert(false), now, true).unwrap(),
            Some(OrderKind::Reissue)
        );
        assert_eq!(
            decide(&issued(now, 29, 300), &cert(false), now, false).unwrap(),
            Some(OrderKind::Reissue)
        );
        assert_eq!(
            decide(&issued(now, -3, 300), &cert(false), now, false).unwrap(),
            Some(OrderKind::Reissue)
        );
        let mut by_duration = cert(false);
        by_duration.renew_before = RenewBefore::Before(Duration::from_secs(10 * DAY as u64));
        assert_eq!(decide(&issued(now, 11, 300), &by_duration, now, false).unwrap(), None);
        assert_eq!(
            decide(&issued(now, 9, 300), &by_duration, now, false).unwrap(),
            Some(OrderKind::Reissue)
        );
    }

    #[test]
    fn the_term_is_renewed_only_when_allowed() {
        let now = 1_800_000_000;
        let ended = issued(now, 20, -1);
        let e = decide(&ended, &cert(false), now, false).unwrap_err().to_string();
        assert!(e.contains("renew_term = true"), "{e}");
        assert_eq!(decide(&ended, &cert(true), now, false).unwrap(), Some(OrderKind::Renew));
        // Close to the term's end a reissue would not outlive it: renew instead, if allowed.
        assert_eq!(
            decide(&issued(now, 20, 20), &cert(true), now, false).unwrap(),
            Some(OrderKind::Renew)
        );
        assert_eq!(
            decide(&issued(now, 20, 20), &cert(false), now, false).unwrap(),
            Some(OrderKind::Reissue)
        );
    }

    #[test]
    fn the_spend_guard_counts_accepted_and_lost_requests_but_not_those_never_made() {
        let mut st = CertState::default();
        let req = |status: &str, term| PaidRequest {
            kind: OrderKind::Renew,
            ctid: "c".into(),
            sent_at: 0,
            term,
            status: status.into(),
            job_id: None,
        };
        st.paid = vec![req("not_made", 5), req("sent", 5), req("accepted", 9)];
        assert_eq!(paid_in_term(&st, OrderKind::Renew, 5), 1);
        assert_eq!(paid_in_term(&st, OrderKind::Renew, 9), 1);
        assert_eq!(paid_in_term(&st, OrderKind::Create, 5), 0);
    }
}
