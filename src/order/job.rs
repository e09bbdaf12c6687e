//! Waiting for the job the API started (`accepted` → `job_done`): through the poll queue, with
//! `GET /job/{id}` as the fallback, a message confirmed only once our state is on disk.

use std::time::Duration;

use anyhow::{anyhow, bail};

use super::{Agent, Ending};
use crate::api::wire::{JobStatus, object_certificate_id};
use crate::config::{CertConfig, DnsMode};
use crate::dns::{self, DcvRecord};
use crate::store::{CertState, Step};

impl Agent {
    /// `accepted`: waits for the job through the poll queue, falling back to `GET /job/{id}` so
    /// that messages about other jobs never block. A message is confirmed only after our state is
    /// on disk.
    pub(super) async fn wait_for_job(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
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
            let mut status: Option<(JobStatus, Option<i64>, String)> = None;
            let mut confirm = None;
            match self.client.poll().await {
                Ok(Some(msg)) => {
                    let about = msg.job.as_ref().map(|j| j.id);
                    if about == Some(job_id) {
                        let s = msg
                            .job
                            .as_ref()
                            .and_then(|j| j.status.clone())
                            .unwrap_or(JobStatus::NotSet);
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
                        let s = oj.job.status.clone().unwrap_or(JobStatus::NotSet);
                        status = Some((s, object_certificate_id(&oj.object), String::new()));
                    }
                    Err(e) => tracing::debug!(job_id, error = %e, "job info failed"),
                }
            }
            match status {
                Some((JobStatus::Success, cert_id, _)) => {
                    let jm = Self::journal(st)?;
                    jm.certificate_id = cert_id.or(jm.certificate_id);
                    if let Some(id) = cert_id {
                        st.certificate_id = Some(id);
                    }
                    self.advance(cert, st, Step::JobDone)?;
                    self.job_finished(job_id, confirm).await;
                    return Ok(());
                }
                Some((s, cert_id, reason)) if s.failed() => {
                    if let Some(id) = cert_id {
                        st.certificate_id.get_or_insert(id);
                    }
                    self.end(cert, st, Ending::JobFailed).await?;
                    self.job_finished(job_id, confirm).await;
                    let reason = if reason.is_empty() {
                        String::from("no reason given")
                    } else {
                        reason
                    };
                    bail!("job {job_id} for {} ended {}: {reason}", cert.name, s.as_str());
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "job {job_id} for {} is still running after {}; the next run picks it up",
                    cert.name,
                    crate::text::duration(self.config.order.job_timeout)
                );
            }
            pause = (pause * 2).min(self.config.order.poll_interval_max);
        }
    }

    /// Remembers a finished job (its leftover messages are confirmed when seen) and confirms the
    /// poll message that told of it, once our state is on disk.
    async fn job_finished(&self, job_id: i64, confirm: Option<i64>) {
        if let Ok(mut f) = self.finished_jobs.lock() {
            f.insert(job_id);
        }
        if let Some(m) = confirm {
            let _ = self.client.confirm(m).await;
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
