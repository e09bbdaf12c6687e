//! Jobs: each order runs as one, waiting for domain control (or the job delay), then issuing or
//! failing; their inquiries (info, search; of running jobs and of the history of ended ones)
//! and what the job runner asks of them.
//!
//! A DNS job whose record is not yet served waits as `DEFERRED` (`WF_DNS_AUTH`). A job that has
//! ended moves to the history: `GET /job/{id}` answers 404 `EF300101` for it, and
//! `GET /job/history/{id}` serves it (with `finished_jobs_stay`, both do).

use std::time::Instant;

use serde_json::{Value, json};

use super::query::{JOB_KEYS, filter_page};
use super::{ApiError, Env, JobRec, Pending, Reply, Result, State, scale, time_dur};
use crate::ca::{Issued, TestCa};
use crate::config::Durations;
use crate::dns::Value as DnsValue;
use crate::faults::JobOutcome;
use crate::time::{format as ts, now};
use crate::wire::{
    BasicUser, CertificateHistory, Job, Message, ObjectJob, Query, ResponseObject, StatusType, WorkflowEvent,
};

/// What a job waiting for domain control needs checked.
#[derive(Clone, Debug)]
pub struct DcvCheck {
    pub job_id: i64,
    /// DNS: `(record name, expected TXT value)` pairs; FILE: `(name, expected file content)`,
    /// fetched from `http://NAME/.well-known/pki-validation/fileauth.txt`. All must be served.
    pub records: Vec<(String, String)>,
    /// A FILE validation (an HTTP GET per name) rather than a DNS one.
    pub file: bool,
    pub timed_out: bool,
}

impl State {
    /// Starts a job for an order (or a revoke or delete, which issue nothing), provisioning its
    /// DNS records first if AutoDNS is to.
    pub(super) fn start_job(
        &mut self,
        owner: &BasicUser,
        cert_id: i64,
        action: &'static str,
        pending: Option<Pending>,
        ctid: Option<String>,
        env: Env<'_>,
    ) -> i64 {
        let id = self.next_job;
        self.next_job += 1;
        let cert = self
            .certs
            .get_mut(&cert_id)
            .expect("start_job is called with a known certificate");
        cert.busy_job = Some(id);
        let sub_status = match pending.as_ref().map(|p| p.auth.method.as_str()) {
            Some("DNS") => Some("WF_DNS_AUTH"),
            Some("EMAIL") => Some("WF_EMAIL_AUTH"),
            Some(_) => Some("WF_FILE_AUTH"),
            None => None,
        };
        if let Some(p) = &pending
            && p.auth.method == "DNS"
            && p.auth.provisioning
        {
            for n in &p.names {
                let record = DnsValue::Txt(p.auth.token.clone());
                let _ = env
                    .zones
                    .add(&p.auth.record(n), record, 300, env.durations.propagation_delay);
            }
        }
        let t = now();
        let job = JobRec {
            id,
            owner: owner.clone(),
            cert_id,
            action,
            status: "RUNNING",
            sub_status,
            product: cert.product.name.into(),
            name: cert.name.clone(),
            ctid,
            created: t,
            updated: t,
            started: Instant::now(),
            pending,
            outcome: self.faults.job_outcome,
            messages: Vec::new(),
        };
        self.jobs.insert(id, job);
        id
    }

    /// Whether `GET /job/{id}` and `/job/_search` (`history` false) or the history routes
    /// (`history` true) serve the job.
    fn served(&self, j: &JobRec, history: bool) -> bool {
        if history {
            !j.active()
        } else {
            j.active() || self.faults.finished_jobs_stay
        }
    }

    /// `GET /job/{id}` (`history` false) or `GET /job/history/{id}`.
    pub fn job_info(&self, owner: &BasicUser, id: i64, history: bool) -> Result<Reply> {
        let (task, code, text) = if history {
            ("300134", "S300134", "Job history data were inquired successfully.")
        } else {
            ("300114", "S300114", "Job data were inquired successfully.")
        };
        let j = self
            .jobs
            .get(&id)
            .filter(|j| &j.owner == owner && self.served(j, history))
            .ok_or_else(|| ApiError::job_not_found(task, id))?;
        Ok(Reply::success(code, text)
            .object("ObjectJob", id)
            .data([self.object_job(j, true)]))
    }

    /// `POST /job/_search` (`history` false) or `POST /job/history/_search`.
    pub fn job_search(&self, owner: &BasicUser, q: &Query, history: bool) -> Result<Reply> {
        let all: Vec<&JobRec> = self
            .jobs
            .values()
            .filter(|j| &j.owner == owner && self.served(j, history))
            .collect();
        let (total, found) = filter_page(all, q, JOB_KEYS, |j, key| match key {
            "id" => Some(j.id.to_string()),
            "status" => Some(j.status.into()),
            "subStatus" => j.active().then_some(j.sub_status).flatten().map(Into::into),
            "action" => Some(j.action.into()),
            "object" => Some(j.name.clone()),
            "type" => Some("ssl".into()),
            "created" => Some(ts(self.created(j.created))),
            "updated" => Some(ts(j.updated)),
            "execution" => Some(ts(j.created)),
            _ => None,
        })?;
        let (code, text) = if history {
            ("S300135", "Job history list was inquired successfully.")
        } else {
            ("S300115", "Job list was inquired successfully.")
        };
        let with_data = self.faults.job_search_data;
        Ok(Reply::success(code, text)
            .data(found.into_iter().map(|j| self.object_job(j, with_data)))
            .summary("ObjectJob", total))
    }

    /// A job as answered; poll messages add `type: "ssl"`. The spec's `events` (with the ctid)
    /// only with `job_event_ctid`.
    pub(super) fn job_view(&self, j: &JobRec, in_poll: bool) -> Job {
        Job {
            id: j.id,
            kind: in_poll.then(|| "ssl".into()),
            status: j.status.into(),
            sub_status: if j.active() { j.sub_status.map(Into::into) } else { None },
            sub_type: j.product.clone(),
            action: j.action.into(),
            execution: ts(j.created),
            created: ts(self.created(j.created)),
            updated: ts(j.updated),
            owner: j.owner.clone(),
            updater: j.owner.clone(),
            events: if self.faults.job_event_ctid {
                vec![WorkflowEvent {
                    job_id: j.id,
                    ctid: j.ctid.clone(),
                    object: j.name.clone(),
                    kind: "Certificate".into(),
                    subtype: j.action.into(),
                }]
            } else {
                Vec::new()
            },
        }
    }

    /// A job with the certificate it works on; `object.data` (the certificate's id and order
    /// numbers) only `with_data`.
    fn object_job(&self, j: &JobRec, with_data: bool) -> ObjectJob {
        ObjectJob {
            job: self.job_view(j, false),
            object: ResponseObject {
                kind: "Certificate".into(),
                value: Some(j.name.clone()),
                summary: None,
                data: with_data.then(|| self.cert_summary(j.cert_id)),
            },
        }
    }

    pub(super) fn cert_summary(&self, cert_id: i64) -> Value {
        match self.certs.get(&cert_id) {
            Some(c) => json!({
                "id": c.id,
                "orderId": c.order_id,
                "partnerOrderId": format!("IX-CC-{}", c.id),
                "name": c.name,
                "product": c.product.name,
                "serialNumber": c.issued.as_ref().map(|i| i.serial.clone()).unwrap_or_else(|| "NOT_SET".into()),
                "adminContact": {"id": c.admin.unwrap_or(-1)},
                "technicalContact": {"id": c.tech.unwrap_or(-1)},
            }),
            None => json!({ "id": cert_id }),
        }
    }

    /// Ends a job: issues on success (`issued` given or `None` for jobs that issue nothing) or
    /// records `failure`, and queues its poll message(s).
    pub fn finish_job(&mut self, job_id: i64, issued: Option<Issued>, failure: Option<String>) {
        let Some(mut j) = self.jobs.get(&job_id).cloned() else {
            return;
        };
        if !j.active() {
            return;
        }
        let t = now();
        j.updated = t;
        if let Some(p) = j
            .pending
            .as_ref()
            .filter(|p| p.auth.method == "DNS" && p.auth.provisioning)
        {
            self.stale_records
                .extend(p.names.iter().map(|n| (p.auth.record(n), p.auth.token.clone())));
        }
        if let Some(reason) = failure {
            j.status = "FAILED";
            j.messages.push(Message {
                code: "EF400101".into(),
                text: reason,
                status: StatusType::Error,
                objects: vec![],
            });
        } else {
            j.status = "SUCCESS";
            if let (Some(issued), Some(p), Some(c)) = (issued, j.pending.as_ref(), self.certs.get_mut(&j.cert_id)) {
                if let Some(old) = c.issued.take() {
                    c.histories.push(CertificateHistory {
                        serial_number: old.serial,
                        order_id: c.order_id.clone(),
                        revoked: None,
                    });
                }
                c.issued = Some(issued);
                c.names = p.names.clone();
                c.csr = p.csr.clone();
                c.auth = p.auth.clone();
                c.updated = t;
                if j.action == "renew" {
                    c.months = p.months;
                }
            }
        }
        if let Some(c) = self.certs.get_mut(&j.cert_id)
            && c.busy_job == Some(job_id)
        {
            c.busy_job = None;
        }
        self.jobs.insert(job_id, j.clone());
        self.notify(&j);
    }

    /// A DNS job whose record is not yet served waits as `DEFERRED` (`WF_DNS_AUTH`); the first
    /// time, with `notify_deferred`, a poll message says so.
    pub fn defer_job(&mut self, job_id: i64) {
        let Some(j) = self.jobs.get_mut(&job_id) else {
            return;
        };
        if j.status != "RUNNING" {
            return;
        }
        j.status = "DEFERRED";
        j.updated = now();
        let j = j.clone();
        if self.faults.notify_deferred {
            self.notify(&j);
        }
    }

    /// Approves an EMAIL job (its approver clicked the mail's link): it issues now. `false` for a
    /// job that waits for no approval.
    pub fn approve_job(&mut self, job_id: i64, ca: &TestCa, d: &Durations) -> bool {
        let waits = self
            .jobs
            .get(&job_id)
            .is_some_and(|j| j.active() && j.pending.as_ref().is_some_and(|p| p.auth.method == "EMAIL"));
        if waits {
            self.complete_job(job_id, ca, d);
        }
        waits
    }

    /// Marks a job stuck (it stays RUNNING until completed or failed by hand).
    pub fn stall_job(&mut self, job_id: i64) -> bool {
        match self.jobs.get_mut(&job_id) {
            Some(j) if j.active() => {
                j.outcome = JobOutcome::Stuck;
                true
            }
            _ => false,
        }
    }

    pub fn job_exists(&self, job_id: i64) -> bool {
        self.jobs.contains_key(&job_id)
    }

    /// Jobs that are due a decision now: `(job, Some(check))` for DNS jobs still waiting,
    /// `(job, None)` for jobs ready to complete without a DNS check; failures are applied here.
    pub fn due_jobs(&mut self, d: &Durations) -> (Vec<DcvCheck>, Vec<i64>) {
        let mut checks = Vec::new();
        let mut ready = Vec::new();
        let mut fail = Vec::new();
        for j in self.jobs.values().filter(|j| j.active()) {
            let elapsed = j.started.elapsed();
            if elapsed < d.job_delay {
                continue;
            }
            match j.outcome {
                JobOutcome::Stuck => continue,
                JobOutcome::Fail => {
                    fail.push((j.id, "the certificate authority rejected the order".to_string()));
                    continue;
                }
                JobOutcome::Normal => {}
            }
            let timed_out = elapsed >= d.dcv_timeout;
            match &j.pending {
                Some(p) if p.auth.method == "DNS" => checks.push(DcvCheck {
                    job_id: j.id,
                    records: p
                        .names
                        .iter()
                        .map(|n| (format!("{}.", p.auth.record(n)), p.auth.token.clone()))
                        .collect(),
                    file: false,
                    timed_out,
                }),
                Some(p) if p.auth.method == "FILE" => checks.push(DcvCheck {
                    job_id: j.id,
                    records: p.names.iter().map(|n| (n.clone(), p.auth.token.clone())).collect(),
                    file: true,
                    timed_out,
                }),
                // An approval mail is answered by a person: after `approval_delay` if set, else
                // only through `POST /_sim/jobs/{id}` (`approve`); unanswered, the job fails.
                Some(p) if p.auth.method == "EMAIL" => {
                    if d.approval_delay.is_some_and(|a| elapsed >= a) {
                        ready.push(j.id);
                    } else if timed_out {
                        fail.push((
                            j.id,
                            format!("the approval mail to {} was not answered", p.auth.approvers.join(", ")),
                        ));
                    }
                }
                _ => ready.push(j.id),
            }
        }
        for (id, reason) in fail {
            self.finish_job(id, None, Some(reason));
        }
        (checks, ready)
    }

    /// Issues the certificate a job ordered and finishes the job.
    pub fn complete_job(&mut self, job_id: i64, ca: &TestCa, d: &Durations) {
        let Some(j) = self.jobs.get(&job_id).cloned() else {
            return;
        };
        if !j.active() {
            return;
        }
        let Some(p) = j.pending.clone() else {
            self.finish_job(job_id, None, None);
            return;
        };
        let Some(cert) = self.certs.get_mut(&j.cert_id) else {
            self.finish_job(job_id, None, Some("the certificate was deleted".into()));
            return;
        };
        let t = now();
        if j.action == "renew" {
            let base = if cert.term_end > t { cert.term_end } else { t };
            cert.term_end = base + scale(d.month, p.months);
        }
        let not_after = (t + time_dur(d.cert_validity)).min(cert.term_end);
        let mutation = self.faults.mutation;
        match ca.issue(&p.spki, &p.names, p.mail, not_after, mutation) {
            Ok(issued) => self.finish_job(job_id, Some(issued), None),
            Err(e) => self.finish_job(job_id, None, Some(format!("issuing failed: {e}"))),
        }
    }
}
