//! Waiting for the job the API started (`accepted` → `job_done`): through the agent's one reader
//! of the poll queue (`poll`), which hands the order its job's end and confirms the message only
//! once the order's journal is written; the order asks for its job itself only when the queue
//! cannot tell it.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

use super::poll::{Event, Outcome, Wanted};
use super::{Agent, Ending};
use crate::api::wire::JobStatus;
use crate::config::{CertConfig, DnsMode};
use crate::dns::{self, DcvRecord};
use crate::store::{CertState, Step};

/// How long one run waits for a job whose approval mail is not answered yet, before it says
/// so and goes on (the next run, or the daemon's next look, waits again).
pub(crate) const APPROVAL_LOOK: Duration = Duration::from_secs(60);

/// The first wait for a job that needs an approval, in the run that ordered it: short, so that
/// the operator hears of the approval mail at once.
pub(crate) const APPROVAL_FIRST_LOOK: Duration = Duration::from_secs(5);

/// How long an AutoDNS order waits for its job before it logs what the authoritative
/// nameservers serve of its validation record, and how often it logs that again.
pub(crate) const DNS_VIEW_FIRST: Duration = Duration::from_secs(15);
pub(crate) const DNS_VIEW_EVERY: Duration = Duration::from_secs(15 * 60);

/// Whether an order that has waited `waited` for its job, and last logged the nameservers' view
/// `since_shown` ago (`None`: not yet), logs it now. The view is a diagnostic for a job that waits
/// longer than a job usually takes (DNS not yet seen); it costs a lookup of the zone's
/// nameservers and a question to each, so it is not asked for every short wait.
pub(crate) fn dns_view_due(waited: Duration, since_shown: Option<Duration>) -> bool {
    match since_shown {
        None => waited >= DNS_VIEW_FIRST,
        Some(since) => since >= DNS_VIEW_EVERY,
    }
}

/// What an order waiting for its approval says, in `status` and to `on_failure`.
pub(crate) fn approval_message(approver: &str, job_id: i64) -> String {
    format!("waiting for approval by {approver} (job {job_id}): the CA's approval mail must be answered")
}

impl Agent {
    /// `accepted`: waits for the job's end, within `order.job_timeout`; a job that waits for
    /// its approval mail, within [`APPROVAL_FIRST_LOOK`] (then [`APPROVAL_LOOK`]), and then
    /// `Some(AwaitingApproval)`.
    pub(super) async fn wait_for_job(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
    ) -> anyhow::Result<Option<super::Outcome>> {
        let known = st.certificate_id;
        let j = Self::journal(st)?;
        let Some(job_id) = j.job_id else {
            return self.wait_for_certificate(cert, st).await.map(|()| None);
        };
        let approver = j.approver.clone();
        let told = j.awaiting_approval_since;
        let records = j.records.clone();
        let wanted = Wanted {
            job_id,
            ctid: j.ctid.clone(),
            certificate_id: j.certificate_id.or(known),
            spki_sha256: j.spki_sha256.clone(),
        };
        // The jobs of this certificate's earlier orders have ended: a message about one is a
        // leftover of ours.
        self.poll
            .remember_ours(st.jobs.iter().copied().filter(|id| *id != job_id));
        // An approval is told at once: the first look is short, the later ones a minute.
        let wait = match (&approver, told) {
            (Some(_), None) => self.config.order.job_timeout.min(APPROVAL_FIRST_LOOK),
            (Some(_), Some(_)) => self.config.order.job_timeout.min(APPROVAL_LOOK),
            (None, _) => self.config.order.job_timeout,
        };
        let started = tokio::time::Instant::now();
        let deadline = started + wait;
        let mut waiting = self.poll.wait(wanted);
        let mut shown: Option<tokio::time::Instant> = None;
        loop {
            match waiting.next(deadline).await {
                Event::Done(outcome) => return self.job_ended(cert, st, job_id, outcome).await.map(|()| None),
                Event::Round => {
                    // The view is only logged: nothing to ask when info lines are not.
                    if cert.dns == DnsMode::Autodns
                        && dns_view_due(started.elapsed(), shown.map(|t| t.elapsed()))
                        && tracing::enabled!(tracing::Level::INFO)
                    {
                        shown = Some(tokio::time::Instant::now());
                        self.log_dns_view(&cert.name, &records).await;
                    }
                }
                Event::TimedOut if let Some(approver) = &approver => {
                    // Only a job the API shows still pending waits for its approval: an API that
                    // cannot be asked (a changed password, an outage) is a failure, with its
                    // backoff and its alarm, not a wait.
                    match self.client.job(job_id).await {
                        Ok(seen) if !seen.job.status.as_ref().is_some_and(JobStatus::is_final) => {}
                        Ok(seen) => bail!(
                            "job {job_id} for {} has ended ({}), but its notification has not come yet; the next run picks it up",
                            cert.name,
                            seen.job.status.as_ref().map_or("?", JobStatus::as_str)
                        ),
                        // An ended job leaves `GET /job/{id}` for the history.
                        Err(e) if e.is_job_unknown() => bail!(
                            "job {job_id} for {} has ended, but its notification has not come yet; the next run picks it up",
                            cert.name
                        ),
                        Err(e) => {
                            return Err(anyhow!(e).context(format!(
                                "asking the API whether job {job_id} for {} still waits for its approval",
                                cert.name
                            )));
                        }
                    }
                    let jm = Self::journal(st)?;
                    let newly = jm.awaiting_approval_since.is_none();
                    if newly {
                        jm.awaiting_approval_since = Some(time::OffsetDateTime::now_utc().unix_timestamp());
                        self.store
                            .save(st)
                            .with_context(|| format!("writing the state of {}", cert.name))?;
                    }
                    return Ok(Some(super::Outcome::AwaitingApproval {
                        newly,
                        message: approval_message(approver, job_id),
                    }));
                }
                Event::TimedOut => bail!(
                    "job {job_id} for {} is still running after {}; the next run picks it up",
                    cert.name,
                    crate::text::duration(self.config.order.job_timeout)
                ),
            }
        }
    }

    /// The job ended: the journal records how, and only then is the poll message that told of it
    /// confirmed (`poll.finished`).
    async fn job_ended(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
        job_id: i64,
        outcome: Outcome,
    ) -> anyhow::Result<()> {
        let news = outcome.news.clone();
        tracing::debug!(cert = %cert.name, job_id, source = ?outcome.source, status = news.status.as_str(), "the job ended");
        match news.status {
            JobStatus::Success => {
                let jm = Self::journal(st)?;
                jm.certificate_id = news.certificate_id.or(jm.certificate_id);
                if let Some(id) = news.certificate_id {
                    st.certificate_id = Some(id);
                }
                self.advance(cert, st, Step::JobDone)?;
                self.poll.finished(job_id, outcome).await;
                Ok(())
            }
            s => {
                if let Some(id) = news.certificate_id {
                    st.certificate_id.get_or_insert(id);
                }
                self.end(cert, st, Ending::JobFailed).await?;
                self.poll.finished(job_id, outcome).await;
                let reason = if news.reason.is_empty() {
                    String::from("no reason given")
                } else {
                    news.reason
                };
                bail!("job {job_id} for {} ended {}: {reason}", cert.name, s.as_str());
            }
        }
    }

    /// `accepted` without a job id (reconciliation found the certificate a lost request made or
    /// changed, but not its job): waits until the certificate holds a leaf for the order's key.
    async fn wait_for_certificate(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?.clone();
        let id = j
            .certificate_id
            .or(st.certificate_id)
            .ok_or_else(|| anyhow!("the journal knows neither the job nor the certificate"))?;
        let deadline = tokio::time::Instant::now() + self.config.order.job_timeout;
        let mut pause = self.config.order.poll_interval;
        loop {
            match self.client.certificate(id).await {
                Ok(c) => {
                    let ours = c.server.as_deref().is_some_and(|leaf| {
                        j.spki_sha256
                            .as_deref()
                            .is_some_and(|spki| crate::x509::certifies_key(leaf, spki))
                    });
                    if ours {
                        Self::journal(st)?.certificate_id = Some(id);
                        st.certificate_id = Some(id);
                        return self.advance(cert, st, Step::JobDone);
                    }
                }
                Err(e) => tracing::debug!(certificate = id, error = %e, "certificate info failed"),
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "certificate {id} of {} holds no certificate for the order's key after {}; the next run looks again",
                    cert.name,
                    crate::text::duration(self.config.order.job_timeout)
                );
            }
            tokio::time::sleep(pause).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nameservers_view_is_logged_for_a_long_wait_not_a_short_one() {
        let s = Duration::from_secs;
        // A job that ends within seconds (the usual case) asks the nameservers nothing.
        assert!(!dns_view_due(s(0), None));
        assert!(!dns_view_due(s(14), None));
        // As with the shipped poll backoff (2 s doubling) before: about 15 s in, the first look.
        assert!(dns_view_due(s(15), None));
        assert!(dns_view_due(s(3600), None));
        // Then every 15 minutes, however many rounds pass in between.
        assert!(!dns_view_due(s(16), Some(s(1))));
        assert!(!dns_view_due(s(3600), Some(s(899))));
        assert!(dns_view_due(s(915), Some(s(900))));
    }
}
