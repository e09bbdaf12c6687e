//! A paid request whose answer was lost (`sending`): was it made? Only what the API documents
//! and its real answers show is asked (ARCHITECTURE.md, "API facts"): a poll message carrying the
//! request's ctid, the jobs and finished jobs about the certificate's name doing the request's
//! action, and the certificates by that name (a new one for a create, our CSR on the order for a
//! reissue). What is found is adopted. Only complete searches that found nothing, after the
//! grace measured on the boot clock from the journal's sending time, let the request count as
//! never made; where the evidence does not settle it, nothing is sent and the certificate is
//! "payment unresolved" until `certkeeper resolve` settles it.
//!
//! No run waits for the grace: each call looks a few times within [`LOOK_BUDGET`] and returns.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use time::OffsetDateTime;

use super::{Agent, Outcome};
use crate::api::wire::{Certificate, ObjectJob, object_certificate_id, parse_time};
use crate::config::CertConfig;
use crate::store::{BootTime, CertState, OrderJournal, OrderKind, PaidStatus, Step};

/// How long one run looks for a lost answer before it moves on (the next run, or the daemon's
/// next look, continues).
pub const LOOK_BUDGET: Duration = Duration::from_secs(60);

/// The pauses between the looks of one run.
const PAUSES: [Duration; 3] = [Duration::from_secs(5), Duration::from_secs(10), Duration::from_secs(20)];

/// How far before the journal's sending time a job or certificate may have been `created` and
/// still be the request's: a host clock that is off, and the API's `created` truncated to the
/// day (2018 samples), must not hide it. What matches is decided by name, action and ids.
const CREATED_MARGIN: i64 = 86_400;

/// When the daemon looks again at a request still being reconciled.
pub const LOOK_AGAIN: Duration = Duration::from_secs(60);

/// What one look found.
#[derive(Debug)]
pub(super) enum Look {
    /// The request arrived: its job, or the certificate it made or changed.
    Found {
        job_id: Option<i64>,
        certificate_id: Option<i64>,
        via: &'static str,
    },
    /// Every source answered and none knows of the request.
    Clean,
    /// A source failed: this look proves nothing.
    Unclear(String),
}

/// The action a job of `kind` has in the API's job lists, as certkeeper names it.
pub fn action(kind: OrderKind) -> &'static str {
    match kind {
        OrderKind::Create => "create",
        OrderKind::Reissue => "reissue",
        OrderKind::Renew => "renew",
    }
}

/// The actions a job of a request of `kind` may show. Real answers show only `create` (and
/// `update` for other objects): the help page's reissue ends with a poll message whose job says
/// `create` (`GET_poll__help-reissue-quickssl_2018`), so a reissue's or renewal's job may say
/// any of these; an earlier request's job is told apart by its id.
fn actions(kind: OrderKind) -> &'static [&'static str] {
    match kind {
        OrderKind::Create => &["create"],
        OrderKind::Reissue => &["reissue", "create", "update"],
        OrderKind::Renew => &["renew", "create", "update"],
    }
}

/// How long ago the request left, in seconds: on the boot clock where it can be read and the
/// host has not restarted since; else on the wall clock (never negative).
pub fn elapsed(j: &OrderJournal) -> u64 {
    let wall = || {
        let sent = j.sent_at.unwrap_or(j.started_at);
        (OffsetDateTime::now_utc().unix_timestamp() - sent).max(0) as u64
    };
    j.sent_boot.as_ref().and_then(BootTime::elapsed).unwrap_or_else(wall)
}

/// Whether `job` is one a request of ours for `name` started: about a certificate named
/// `name`, doing one of `actions`, and not a job certkeeper already knows as another request's.
fn is_ours(job: &ObjectJob, name: &str, actions: &[&str], known_jobs: &[i64]) -> bool {
    let object = job.object.as_ref();
    let about_name = object
        .and_then(|o| o.value.as_deref())
        .is_some_and(|v| v.trim_end_matches('.').eq_ignore_ascii_case(name));
    let a_certificate = object
        .and_then(|o| o.kind.as_deref())
        .is_none_or(|k| k.eq_ignore_ascii_case("certificate"));
    let doing = job
        .job
        .action
        .as_deref()
        .is_none_or(|a| actions.iter().any(|x| a.eq_ignore_ascii_case(x)));
    about_name && a_certificate && doing && !known_jobs.contains(&job.job.id)
}

/// Whether a certificate found by name is one a create or renew of ours made: not known when
/// the request left, and not created long before it.
fn is_new(c: &Certificate, name: &str, known: &[i64], since: i64) -> bool {
    let named = c
        .name
        .as_deref()
        .is_none_or(|n| n.trim_end_matches('.').eq_ignore_ascii_case(name));
    let recent = c
        .created
        .as_deref()
        .and_then(parse_time)
        .is_none_or(|t| t.unix_timestamp() >= since);
    named && recent && !known.contains(&c.id)
}

/// A CSR compared without its line breaks (the API may wrap it its own way).
fn same_csr(a: &str, b: &str) -> bool {
    let flat = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
    !a.trim().is_empty() && flat(a) == flat(b)
}

impl Agent {
    /// `sending`: settles a paid request whose answer was lost, or says why it cannot yet.
    /// `Ok(None)`: settled (the order moved on to `accepted`, or back to `dns_verified` to be
    /// sent again); `Ok(Some(outcome))`: not settled in this run.
    pub(super) async fn reconcile(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<Option<Outcome>> {
        let started = tokio::time::Instant::now();
        let grace = self.config.order.reconcile_grace.as_secs();
        // Already unresolved in an earlier run: one look per run, until the evidence or the
        // operator settles it.
        let mut pauses = if Self::journal(st)?.unresolved_since.is_some() {
            [].iter()
        } else {
            PAUSES.iter()
        };
        let mut last_unclear = None;
        loop {
            let left = LOOK_BUDGET.saturating_sub(started.elapsed());
            let look = match tokio::time::timeout(left, self.look(cert, st)).await {
                Ok(look) => look,
                Err(_) => Look::Unclear(format!("no answer within {}", crate::text::duration(LOOK_BUDGET))),
            };
            let j = Self::journal(st)?;
            let waited = elapsed(j);
            let ctid = j.ctid.clone().unwrap_or_default();
            match look {
                Look::Found {
                    job_id,
                    certificate_id,
                    via,
                } => {
                    tracing::info!(cert = %cert.name, %ctid, ?job_id, ?certificate_id, via, "found the order the lost answer belonged to");
                    return self.adopt(cert, st, job_id, certificate_id).map(|()| None);
                }
                Look::Clean => {
                    j.clean_searches += 1;
                    if waited >= grace && j.clean_searches >= 2 && !j.answer_unreadable {
                        tracing::warn!(cert = %cert.name, %ctid, waited, searches = j.clean_searches, "no trace of the request after the grace period: it never arrived");
                        self.never_arrived(cert, st)?;
                        return Ok(None);
                    }
                }
                Look::Unclear(why) => {
                    tracing::warn!(cert = %cert.name, %ctid, error = %why, "the search for the lost answer failed; it proves nothing");
                    last_unclear = Some(why);
                }
            }
            // A reissue costs nothing: past the grace with nothing found it is sent again, even
            // where the evidence cannot prove it never arrived (a second reissue is harmless; a
            // certificate left without one is not).
            if j.kind == OrderKind::Reissue && waited >= grace {
                tracing::warn!(cert = %cert.name, %ctid, waited, "no trace of the free reissue after the grace period: sending it again");
                self.never_arrived(cert, st)?;
                return Ok(None);
            }
            let next = pauses.next().copied();
            match next {
                Some(p) if started.elapsed() + p < LOOK_BUDGET => tokio::time::sleep(p).await,
                _ => break,
            }
        }
        Ok(Some(self.not_settled(cert, st, last_unclear)?))
    }

    /// One look at every source, in the order of what costs least.
    pub(super) async fn look(&self, cert: &CertConfig, st: &CertState) -> Look {
        let Some(j) = st.order.as_ref() else {
            return Look::Unclear("no order in flight".into());
        };
        let ctid = j.ctid.clone().unwrap_or_default();
        let acts = actions(j.kind);
        let sent = j.sent_at.unwrap_or(j.started_at);
        let since = sent - CREATED_MARGIN;
        let since_day =
            OffsetDateTime::from_unix_timestamp(since - since.rem_euclid(86_400)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut known_jobs: Vec<i64> = st.paid.iter().filter_map(|p| p.job_id).collect();
        known_jobs.extend(&st.jobs);

        // 1. The poll queue: a message carrying our ctid names the job, whether this process's
        //    reader saw it go by or it is at the head now.
        if !ctid.is_empty()
            && let Some(seen) = self.poll.by_ctid(&ctid)
            && let Some(job_id) = seen.job_id
        {
            return Look::Found {
                job_id: Some(job_id),
                certificate_id: seen.certificate_id,
                via: "a poll message with the request's ctid",
            };
        }
        if let Ok(Some(msg)) = self.client.poll().await
            && !ctid.is_empty()
            && msg.ctid.as_deref() == Some(ctid.as_str())
            && let Some(job) = &msg.job
        {
            return Look::Found {
                job_id: Some(job.id),
                certificate_id: object_certificate_id(&msg.object),
                via: "a poll message with the request's ctid",
            };
        }
        let mut unclear = Vec::new();
        // 2. Running jobs, then finished ones, about the name doing the request's action.
        for history in [false, true] {
            match self.client.search_jobs(&cert.name, since_day, history).await {
                Ok(jobs) => {
                    if let Some(found) = jobs.iter().find(|oj| is_ours(oj, &cert.name, acts, &known_jobs)) {
                        return Look::Found {
                            job_id: Some(found.job.id),
                            certificate_id: object_certificate_id(&found.object),
                            via: if history {
                                "the finished jobs"
                            } else {
                                "the running jobs"
                            },
                        };
                    }
                }
                Err(e) => unclear.push(format!("{}: {e}", if history { "finished jobs" } else { "jobs" })),
            }
        }
        // 3. The certificate itself: a new one by the name (create, renew), or our CSR on the
        //    order (reissue).
        match (j.kind, st.certificate_id) {
            (OrderKind::Reissue, Some(id)) => match self.client.certificate(id).await {
                Ok(c)
                    if c.csr
                        .as_deref()
                        .is_some_and(|csr| j.csr.as_deref().is_some_and(|ours| same_csr(csr, ours))) =>
                {
                    return Look::Found {
                        job_id: None,
                        certificate_id: Some(id),
                        via: "the order's certificate, which carries our CSR",
                    };
                }
                Ok(_) => {}
                Err(e) => unclear.push(format!("certificate {id}: {e}")),
            },
            _ => match self.client.search_certificates(&cert.name).await {
                Ok(certs) => {
                    let mut known = j.known_certificates.clone();
                    known.extend(st.certificate_id);
                    if let Some(c) = certs.iter().find(|c| is_new(c, &cert.name, &known, since)) {
                        return Look::Found {
                            job_id: None,
                            certificate_id: Some(c.id),
                            via: "a new certificate by the name",
                        };
                    }
                }
                Err(e) => unclear.push(format!("certificates: {e}")),
            },
        }
        if unclear.is_empty() {
            Look::Clean
        } else {
            Look::Unclear(unclear.join("; "))
        }
    }

    /// The request arrived: the order continues at `accepted` with what was found (a job to
    /// follow, or only the certificate it made or changed).
    pub(super) fn adopt(
        &self,
        cert: &CertConfig,
        st: &mut CertState,
        job_id: Option<i64>,
        certificate_id: Option<i64>,
    ) -> anyhow::Result<()> {
        let j = Self::journal(st)?;
        let ctid = j.ctid.clone();
        j.job_id = job_id;
        j.unresolved_since = None;
        if let Some(id) = certificate_id {
            j.certificate_id = Some(id);
        }
        if let Some(p) = st.paid.iter_mut().find(|p| Some(&p.ctid) == ctid.as_ref()) {
            p.status = PaidStatus::Accepted;
            p.job_id = job_id;
        }
        if let Some(id) = certificate_id {
            st.certificate_id.get_or_insert(id);
        }
        if let Some(id) = job_id {
            st.remember_job(id);
        }
        tracing::info!(cert = %st.name, ?job_id, ?certificate_id, "order accepted");
        self.advance(cert, st, Step::Accepted)
    }

    /// The request provably never arrived: it counts as not made, and the order goes back to
    /// `dns_verified`, to be sent again with a new ctid.
    pub(super) fn never_arrived(&self, cert: &CertConfig, st: &mut CertState) -> anyhow::Result<()> {
        let j = Self::journal(st)?;
        let ctid = j.ctid.take();
        j.sent_at = None;
        j.sent_boot = None;
        j.known_certificates.clear();
        j.answer_unreadable = false;
        j.clean_searches = 0;
        j.unresolved_since = None;
        if let Some(p) = st.paid.iter_mut().find(|p| Some(&p.ctid) == ctid.as_ref()) {
            p.status = PaidStatus::NotMade;
        }
        self.advance(cert, st, Step::DnsVerified)
    }

    /// Not settled in this run: the journal keeps what was learnt, and the outcome says what is
    /// awaited. Past the grace the certificate is "payment unresolved".
    fn not_settled(&self, cert: &CertConfig, st: &mut CertState, unclear: Option<String>) -> anyhow::Result<Outcome> {
        let grace = self.config.order.reconcile_grace.as_secs();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let j = Self::journal(st)?;
        let waited = elapsed(j);
        let unresolved = waited >= grace;
        let newly = unresolved && j.unresolved_since.is_none();
        if newly {
            j.unresolved_since = Some(now);
        }
        let why = match (&unclear, j.answer_unreadable) {
            (_, true) => String::from("the API answered the request with nothing readable, so it arrived"),
            (Some(e), _) => format!("the search failed ({e})"),
            (None, _) => format!("{} complete search(es) found no trace yet", j.clean_searches),
        };
        let kind = j.kind.name();
        let message = if unresolved {
            format!(
                "payment unresolved: the answer to the paid {kind} request sent {} ago was lost and {why}; nothing more is sent until it is settled (`certkeeper resolve {}`)",
                crate::text::duration(Duration::from_secs(waited)),
                cert.name
            )
        } else {
            format!(
                "the answer to the {kind} request sent {} ago was lost; {why}; still looking (up to {} after sending), nothing is sent again meanwhile",
                crate::text::duration(Duration::from_secs(waited)),
                crate::text::duration(Duration::from_secs(grace))
            )
        };
        // The next look: in a minute, sooner for a certificate that lives only minutes (as on a
        // compressed clock), as the failure backoff is shortened.
        let lifetime = match (st.not_before, st.not_after) {
            (Some(nb), Some(na)) if na > nb => na - nb,
            _ => i64::MAX,
        };
        st.retry_after = Some(now + (LOOK_AGAIN.as_secs() as i64).min((lifetime / 100).max(1)));
        self.store
            .save(st)
            .map_err(|e| anyhow!("writing the journal of {}: {e}", cert.name))?;
        Ok(Outcome::Unsettled {
            unresolved,
            newly,
            message,
        })
    }
}

/// What an operator says of a paid request whose answer was lost (`certkeeper resolve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    /// It started this job.
    Job(i64),
    /// It made (or, for a reissue, changed) this certificate.
    Certificate(i64),
    /// It never arrived: the next run sends the request again.
    NeverArrived,
}

impl Agent {
    /// Settles the lost answer of `cert`'s paid request as the operator says, after checking a
    /// named job or certificate with the API. Returns what was done, for the operator.
    pub async fn resolve(&self, cert: &CertConfig, settle: Settle) -> anyhow::Result<String> {
        let mut st = self.store.load(&cert.name)?;
        let Some(j) = st.order.as_ref() else {
            bail!("{} has no order in flight: there is nothing to resolve", cert.name);
        };
        if j.step != Step::Sending {
            bail!(
                "the order of {} is at {}, not waiting for a lost answer: there is nothing to resolve",
                cert.name,
                j.step.name()
            );
        }
        let kind = j.kind;
        let act = action(kind);
        let named = |v: Option<&str>| v.is_some_and(|v| v.trim_end_matches('.').eq_ignore_ascii_case(&cert.name));
        match settle {
            Settle::Job(id) => {
                let oj = match self.client.job(id).await {
                    Ok(oj) => oj,
                    Err(e) if e.is_not_found() => self
                        .client
                        .job_history(id)
                        .await
                        .with_context(|| format!("looking up job {id}"))?,
                    Err(e) => return Err(anyhow!(e).context(format!("looking up job {id}"))),
                };
                let about = oj.object.as_ref().and_then(|o| o.value.clone());
                if !named(about.as_deref()) {
                    bail!(
                        "job {id} is about {}, not {}: nothing changed",
                        about.as_deref().unwrap_or("nothing named"),
                        cert.name
                    );
                }
                if let Some(a) = oj
                    .job
                    .action
                    .as_deref()
                    .filter(|a| !actions(kind).iter().any(|x| a.eq_ignore_ascii_case(x)))
                {
                    bail!("job {id} is a {a}, the lost request was a {act}: nothing changed");
                }
                self.adopt(cert, &mut st, Some(id), object_certificate_id(&oj.object))?;
                Ok(format!(
                    "{}: the {act} request is settled as job {id}; the next run follows the job",
                    cert.name
                ))
            }
            Settle::Certificate(id) => {
                let c = self
                    .client
                    .certificate(id)
                    .await
                    .with_context(|| format!("looking up certificate {id}"))?;
                if !named(c.name.as_deref()) {
                    bail!(
                        "certificate {id} is for {}, not {}: nothing changed",
                        c.name.as_deref().unwrap_or("no name"),
                        cert.name
                    );
                }
                self.adopt(cert, &mut st, None, Some(id))?;
                Ok(format!(
                    "{}: the {act} request is settled as certificate {id}; the next run waits for it to hold a certificate for the order's key",
                    cert.name
                ))
            }
            Settle::NeverArrived => {
                self.never_arrived(cert, &mut st)?;
                let paid = if kind.is_paid() { "a new paid" } else { "a new" };
                Ok(format!(
                    "{}: the {act} request is settled as never arrived; the next run sends {paid} {act} request",
                    cert.name
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::wire::{Job, ResponseObject};

    fn job(id: i64, name: &str, kind: Option<&str>, action: Option<&str>) -> ObjectJob {
        ObjectJob {
            job: Job {
                id,
                status: None,
                action: action.map(str::to_string),
                created: None,
                events: vec![],
                kind: None,
                sub_status: None,
                sub_type: None,
            },
            object: Some(ResponseObject {
                kind: kind.map(str::to_string),
                value: Some(name.into()),
                summary: None,
                data: None,
            }),
        }
    }

    #[test]
    fn a_job_is_ours_by_name_action_and_an_unknown_id_never_by_seconds() {
        let j = job(7, "www.example.com", Some("Certificate"), Some("create"));
        let create = actions(OrderKind::Create);
        assert!(is_ours(&j, "www.example.com", create, &[]));
        assert!(is_ours(&j, "WWW.example.com", create, &[1, 2]));
        assert!(
            !is_ours(&j, "www.example.com", create, &[7]),
            "a job of an earlier request"
        );
        assert!(!is_ours(&j, "example.com", create, &[]), "another name");
        assert!(
            is_ours(&j, "www.example.com", actions(OrderKind::Reissue), &[]),
            "as the help page's reissue"
        );
        let renew = job(11, "www.example.com", Some("Certificate"), Some("renew"));
        assert!(!is_ours(&renew, "www.example.com", create, &[]), "another action");
        let update = job(10, "www.example.com", Some("Certificate"), Some("update"));
        assert!(is_ours(&update, "www.example.com", actions(OrderKind::Renew), &[]));
        assert!(!is_ours(&update, "www.example.com", create, &[]));
        let domain = job(8, "www.example.com", Some("Domain"), Some("create"));
        assert!(!is_ours(&domain, "www.example.com", create, &[]), "a domain's job");
        // What the real samples leave out is not held against the job.
        assert!(is_ours(
            &job(9, "www.example.com", None, None),
            "www.example.com",
            create,
            &[]
        ));
    }

    #[test]
    fn a_certificate_is_new_when_unknown_and_not_created_long_before() {
        let c = |id, created: Option<&str>| Certificate {
            id,
            name: Some("www.example.com".into()),
            server: None,
            certification_authority: vec![],
            serial_number: None,
            expire: None,
            payable: None,
            created: created.map(str::to_string),
            reissue_required: None,
            csr: None,
            product: None,
            lifetime: None,
            subject_alternative_names: vec![],
            histories: vec![],
        };
        let since = parse_time("2026-12-01T00:00:00.000+0000").unwrap().unix_timestamp();
        assert!(is_new(&c(5, None), "www.example.com", &[], since));
        assert!(!is_new(&c(5, None), "www.example.com", &[5], since));
        // Truncated to midnight of the day: still new.
        assert!(is_new(
            &c(5, Some("2026-12-01T00:00:00.000+0100")),
            "www.example.com",
            &[],
            since - 3600
        ));
        assert!(!is_new(
            &c(5, Some("2025-01-01T00:00:00.000+0100")),
            "www.example.com",
            &[],
            since
        ));
        assert!(!is_new(&c(5, None), "example.com", &[], since));
    }

    #[test]
    fn csrs_compare_without_line_breaks() {
        let a = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        let b = "-----BEGIN CERTIFICATE REQUEST-----\r\nMIIBAAAA\r\n-----END CERTIFICATE REQUEST-----";
        assert!(same_csr(a, b));
        assert!(!same_csr(
            a,
            "-----BEGIN CERTIFICATE REQUEST-----\nMIIC\n-----END CERTIFICATE REQUEST-----"
        ));
        assert!(!same_csr("", ""));
    }
}
