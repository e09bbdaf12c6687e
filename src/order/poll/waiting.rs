//! One order's wait for its job: the news the reader hands it, and, when the queue cannot tell,
//! its own lookups (`GET /job/{id}`, its history, the certificate) on its own backoff.

use super::*;

/// An order waiting for its job; dropping it ends the wait.
pub(crate) struct Waiting<A: JobApi = Client> {
    pub(super) dispatcher: Arc<Dispatcher<A>>,
    pub(super) job_id: i64,
    pub(super) token: u64,
    pub(super) rx: Option<oneshot::Receiver<Outcome>>,
    pub(super) spki_sha256: Option<String>,
    pub(super) started: Instant,
    /// The order's own backoff, between two rounds.
    pub(super) pause: Duration,
    pub(super) next_look: Instant,
    /// No message can reach this order any more (another registered the same job): it asks.
    pub(super) alone: bool,
    /// `GET /job/{id}` no longer knows the job: it ended, and its history is asked instead.
    pub(super) gone_from_jobs: bool,
}

impl<A: JobApi> Waiting<A> {
    /// Waits for the job's end until the next round of the order's backoff, or `deadline`.
    /// Each round, if the queue cannot tell (see the module), the order asks for its job itself.
    pub(crate) async fn next(&mut self, deadline: Instant) -> Event {
        let at = self.next_look.min(deadline);
        let told = match self.rx.as_mut() {
            Some(rx) => tokio::select! {
                told = rx => Some(told),
                () = tokio::time::sleep_until(at) => None,
            },
            None => {
                tokio::time::sleep_until(at).await;
                None
            }
        };
        match told {
            Some(Ok(outcome)) => {
                self.rx = None;
                return Event::Done(outcome);
            }
            Some(Err(_)) => {
                self.rx = None;
                self.alone = true;
                tokio::time::sleep_until(at).await;
            }
            None => {}
        }
        if Instant::now() >= deadline {
            return Event::TimedOut;
        }
        if (self.alone || self.dispatcher.should_look(self.started.elapsed()))
            && let Some(outcome) = self.look().await
        {
            return Event::Done(outcome);
        }
        self.pause = (self.pause * 2).min(self.dispatcher.interval_max);
        self.next_look = Instant::now() + self.pause;
        Event::Round
    }

    /// Asks for the job: `GET /job/{id}`, its history once it is not known there, and the
    /// certificate when neither knows it.
    async fn look(&mut self) -> Option<Outcome> {
        let d = &self.dispatcher;
        let id = self.job_id;
        let mut answer = None;
        if !self.gone_from_jobs {
            match d.api.job(id).await {
                Ok(oj) => answer = Some((oj, Source::Job)),
                Err(e) if e.is_job_unknown() => {
                    tracing::debug!(
                        job_id = id,
                        "the job is no longer known at GET /job; asking its history"
                    );
                    self.gone_from_jobs = true;
                }
                Err(e) => {
                    tracing::debug!(job_id = id, error = %e, "asking for the job failed");
                    return None;
                }
            }
        }
        if answer.is_none() {
            match d.api.job_history(id).await {
                Ok(oj) => answer = Some((oj, Source::History)),
                Err(e) if e.is_job_unknown() => {}
                Err(e) => {
                    tracing::debug!(job_id = id, error = %e, "asking for the job's history failed");
                    return None;
                }
            }
        }
        if let Some((oj, source)) = answer {
            let news = JobNews::of_job(&oj);
            if let Some(c) = news.certificate_id {
                d.note_certificate(id, c);
            }
            if news.status.is_final() {
                return Some(Outcome {
                    news,
                    source,
                    written: None,
                });
            }
            tracing::debug!(
                job_id = id,
                status = news.status.as_str(),
                sub_status = oj
                    .job
                    .sub_status
                    .as_deref()
                    .map(crate::text::printable)
                    .unwrap_or_default(),
                "the job is under way"
            );
            return None;
        }
        // Known at neither route: the certificate shows whether the job issued it for our key.
        let certificate_id = d.certificate_id(id)?;
        let spki = self.spki_sha256.as_deref()?;
        match d.api.certificate(certificate_id).await {
            Ok(c)
                if c.server
                    .as_deref()
                    .is_some_and(|pem| crate::x509::certifies_key(pem, spki)) =>
            {
                tracing::info!(
                    job_id = id,
                    certificate_id,
                    "the job is known at neither job route; its certificate was issued for the order's key"
                );
                Some(Outcome {
                    news: JobNews {
                        status: JobStatus::Success,
                        certificate_id: Some(certificate_id),
                        reason: String::new(),
                    },
                    source: Source::Certificate,
                    written: None,
                })
            }
            Ok(_) => {
                tracing::debug!(
                    job_id = id,
                    certificate_id,
                    "the job is known at neither job route, and its certificate is not issued for the order's key yet"
                );
                None
            }
            Err(e) => {
                tracing::debug!(job_id = id, certificate_id, error = %e, "asking for the certificate failed");
                None
            }
        }
    }
}

impl<A: JobApi> Drop for Waiting<A> {
    fn drop(&mut self) {
        let mut st = self.dispatcher.state();
        if st.waiters.get(&self.job_id).is_some_and(|w| w.token == self.token) {
            st.waiters.remove(&self.job_id);
        }
    }
}
