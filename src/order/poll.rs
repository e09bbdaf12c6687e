//! One reader of the poll queue for all orders of an agent.
//!
//! The API keeps one poll queue per API user and shows only its head: `GET /poll` answers the
//! oldest unconfirmed message, and the next one appears only once that one is confirmed. The
//! queue holds messages about our jobs (that they ended, or that they wait, DEFERRED), but also
//! other clients' messages and system notices, which stay at its head until their owner
//! confirms them.
//!
//! So one reader per agent reads the queue for every order waiting for its job. An order
//! registers its job id and ctid ([`Dispatcher::wait`]) and awaits [`Waiting::next`]. Each
//! message goes to its order by job id, or else by its ctid:
//!
//! - one that ends a job is handed to its order, which confirms it once its journal is written
//!   ([`Dispatcher::finished`]), and the reader waits for that before it reads on;
//! - one that tells of a job still under way (RUNNING, DEFERRED) is noted and confirmed, so that
//!   the head moves (the journal of an accepted order is on disk already);
//! - a leftover about one of our finished jobs is confirmed;
//! - anything else is left in the queue, never confirmed; if it carries a ctid, it is
//!   remembered for a while ([`Dispatcher::by_ctid`]), so that an order whose answer was lost
//!   can learn whether its job came by.
//!
//! An order asks for its job itself, on its own backoff, only when the queue cannot tell it:
//! the same unconfirmed message stays at the head on consecutive reads (another client's that
//! nobody confirms), reading fails, or the order has waited long ([`QUIET`]). It asks
//! `GET /job/{id}`; once the job is no longer known there, `GET /job/history/{id}`; and when
//! neither knows it, the certificate itself, whose leaf shows whether it was issued for the
//! order's key. On the happy path no order asks: a message costs one read and one confirmation.
//!
//! Bounds: the reader runs only while an order waits and sleeps before every read (from
//! `order.poll_interval`, doubling to `order.poll_interval_max` while nothing of ours comes; at
//! most [`BACKLOG_PAUSE`] while the API says more messages are queued); it waits at most
//! [`WRITTEN_WAIT`] for an order's journal; an order's lookups follow its own backoff and end at
//! its deadline; at most [`FINISHED`] finished jobs and [`SEEN`] ctids are remembered, the
//! oldest forgotten first; the waiting orders are the orders in flight, each removed when it
//! stops waiting.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use crate::api::wire::{Certificate, JobStatus, ObjectJob, PollMessage, object_certificate_id};
use crate::api::{self, Client, Polled};

/// How many finished jobs of ours are remembered, so that their leftover messages are confirmed.
pub(crate) const FINISHED: usize = 1024;
/// How many messages with a ctid that no waiting order registered are remembered.
pub(crate) const SEEN: usize = 256;
/// The longest the reader waits for an order to write its journal before it reads on (the
/// message then stays unconfirmed until it is seen again with the order's journal written).
pub(crate) const WRITTEN_WAIT: Duration = Duration::from_secs(300);
/// The pause before the next read while the API says more messages are queued.
pub(crate) const BACKLOG_PAUSE: Duration = Duration::from_millis(50);
/// After how many reads in a row with the same unconfirmed message at the head it counts as
/// held there; also how many failed reads in a row make the queue unreadable for now.
const HELD_READS: u32 = 2;
/// An order that waited this many `order.poll_interval_max`, and at least [`QUIET_MIN`], asks
/// for its job itself whatever the queue shows (a message of ours may have been confirmed by
/// another client of the same API user, or never sent).
pub(crate) const QUIET: u32 = 5;
/// The least of that wait.
pub(crate) const QUIET_MIN: Duration = Duration::from_secs(60);

/// What the dispatcher needs of the API: the client, or a stand-in in the tests.
pub(crate) trait JobApi: Send + Sync + 'static {
    /// `GET /poll`.
    fn read(&self) -> impl Future<Output = Result<Polled, api::Error>> + Send;
    /// `PUT /poll/{id}`.
    fn confirm_message(&self, message: i64) -> impl Future<Output = Result<(), api::Error>> + Send;
    /// `GET /job/{id}`.
    fn job(&self, id: i64) -> impl Future<Output = Result<ObjectJob, api::Error>> + Send;
    /// `GET /job/history/{id}`.
    fn job_history(&self, id: i64) -> impl Future<Output = Result<ObjectJob, api::Error>> + Send;
    /// `GET /certificate/{id}`.
    fn certificate(&self, id: i64) -> impl Future<Output = Result<Certificate, api::Error>> + Send;
}

impl JobApi for Client {
    fn read(&self) -> impl Future<Output = Result<Polled, api::Error>> + Send {
        self.poll_queue()
    }

    fn confirm_message(&self, message: i64) -> impl Future<Output = Result<(), api::Error>> + Send {
        self.confirm(message)
    }

    fn job(&self, id: i64) -> impl Future<Output = Result<ObjectJob, api::Error>> + Send {
        Client::job(self, id)
    }

    fn job_history(&self, id: i64) -> impl Future<Output = Result<ObjectJob, api::Error>> + Send {
        Client::job_history(self, id)
    }

    fn certificate(&self, id: i64) -> impl Future<Output = Result<Certificate, api::Error>> + Send {
        Client::certificate(self, id)
    }
}

/// What was learnt about a job: its status, the certificate it works on, and the API's words
/// about it (a failure's reason), made printable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct JobNews {
    pub(crate) status: JobStatus,
    pub(crate) certificate_id: Option<i64>,
    pub(crate) reason: String,
}

impl JobNews {
    fn of_message(m: &PollMessage) -> Self {
        Self {
            status: m
                .job
                .as_ref()
                .and_then(|j| j.status.clone())
                .unwrap_or(JobStatus::NotSet),
            certificate_id: object_certificate_id(&m.object),
            reason: m
                .messages
                .iter()
                .filter_map(|m| m.text.as_deref().map(crate::text::printable))
                .collect::<Vec<_>>()
                .join("; "),
        }
    }

    fn of_job(oj: &ObjectJob) -> Self {
        Self {
            status: oj.job.status.clone().unwrap_or(JobStatus::NotSet),
            certificate_id: object_certificate_id(&oj.object),
            reason: String::new(),
        }
    }
}

/// Where an order learnt how its job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The poll message with this id; it is confirmed once the order's journal is written.
    Poll(i64),
    /// `GET /job/{id}`.
    Job,
    /// `GET /job/history/{id}`.
    History,
    /// The certificate, whose leaf was issued for the order's key.
    Certificate,
}

/// How a job ended, for its order. It goes back to [`Dispatcher::finished`] once the order's
/// journal says so, which confirms the message that told of it; dropped instead, the message
/// stays unconfirmed.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) news: JobNews,
    pub(crate) source: Source,
    /// Tells the reader that the journal is written and the message confirmed (dropped unsent:
    /// the journal is not written).
    written: Option<oneshot::Sender<()>>,
}

/// A poll message seen with a ctid that no waiting order had registered: what the
/// reconciliation of a request whose answer was lost may ask [`Dispatcher::by_ctid`] about.
/// The message is left in the queue (it is not known to be ours).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) message_id: i64,
    pub(crate) job_id: Option<i64>,
    pub(crate) status: Option<JobStatus>,
    pub(crate) certificate_id: Option<i64>,
}

/// What an order waits for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Wanted {
    pub(crate) job_id: i64,
    /// The ctid of the request that started the job.
    pub(crate) ctid: Option<String>,
    /// The certificate the job works on, where the journal knows it (a reissue, a renewal).
    pub(crate) certificate_id: Option<i64>,
    /// SHA-256 of the order's public key, hex: how its issue is recognised on the certificate.
    pub(crate) spki_sha256: Option<String>,
}

/// What [`Waiting::next`] came back with.
#[derive(Debug)]
pub(crate) enum Event {
    /// The job ended.
    Done(Outcome),
    /// The `n`th round of the order's backoff passed without the job's end.
    Round(u32),
    /// The deadline passed.
    TimedOut,
}

/// The reader and what it knows, shared by all orders of an agent.
pub(crate) struct Dispatcher<A: JobApi = Client> {
    api: A,
    interval: Duration,
    interval_max: Duration,
    state: Mutex<State>,
    /// Tells the reader that an order started waiting.
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// By job id: the orders waiting, at most one per job.
    waiters: HashMap<i64, Waiter>,
    tokens: u64,
    /// Our finished jobs, oldest first.
    finished: VecDeque<i64>,
    /// Messages with a ctid that no order waited for, oldest first.
    seen: VecDeque<(String, Seen)>,
    /// Whether a reader task runs.
    reading: bool,
    head: Head,
}

struct Waiter {
    token: u64,
    ctid: Option<String>,
    /// Where the job's end goes; taken when it is handed over.
    tx: Option<oneshot::Sender<Outcome>>,
    certificate_id: Option<i64>,
}

/// What the last reads found at the head of the queue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Head {
    /// Nothing read yet, a message of ours, or an empty queue.
    #[default]
    Moving,
    /// The same message, left unconfirmed, on `reads` reads in a row.
    Held { id: i64, reads: u32 },
    /// `reads` reads in a row failed.
    Failing { reads: u32 },
}

/// What the reader does with a message.
enum Route {
    /// Handed to its order, which confirms it once its journal is written.
    Handed {
        job_id: i64,
        written: oneshot::Receiver<()>,
    },
    /// Ours to confirm now.
    Confirm,
    /// Not ours (or not yet ours to confirm): left in the queue.
    Leave,
}

impl<A: JobApi> Dispatcher<A> {
    /// A dispatcher reading through `api`, with the order's `poll_interval` and
    /// `poll_interval_max`.
    pub(crate) fn new(api: A, interval: Duration, interval_max: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        Self {
            api,
            interval,
            interval_max: interval_max.max(interval),
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Registers an order waiting for `wanted.job_id` (starting the reader if none runs); it
    /// stops waiting when the returned handle is dropped.
    pub(crate) fn wait(self: &Arc<Self>, wanted: Wanted) -> Waiting<A> {
        let (tx, rx) = oneshot::channel();
        let (token, start) = {
            let mut st = self.state();
            st.tokens += 1;
            let token = st.tokens;
            let waiter = Waiter {
                token,
                ctid: wanted.ctid.clone(),
                tx: Some(tx),
                certificate_id: wanted.certificate_id,
            };
            st.waiters.insert(wanted.job_id, waiter);
            let start = !st.reading;
            st.reading = true;
            (token, start)
        };
        if start {
            tokio::spawn(self.clone().read());
        } else {
            self.wake.notify_one();
        }
        let now = Instant::now();
        Waiting {
            dispatcher: self.clone(),
            job_id: wanted.job_id,
            token,
            rx: Some(rx),
            spki_sha256: wanted.spki_sha256,
            started: now,
            pause: self.interval,
            next_look: now + self.interval,
            rounds: 0,
            alone: false,
            gone_from_jobs: false,
        }
    }

    /// Marks `job_id` as one of our finished jobs once its order's journal says so, and
    /// confirms the poll message that told of it, if one did: in the order's own course, so that
    /// a run that ends with this order leaves no message of its behind. Then the reader reads on.
    pub(crate) async fn finished(&self, job_id: i64, outcome: Outcome) {
        {
            let mut st = self.state();
            if !st.finished.contains(&job_id) {
                if st.finished.len() >= FINISHED {
                    st.finished.pop_front();
                }
                st.finished.push_back(job_id);
            }
        }
        if let Source::Poll(message) = outcome.source {
            self.confirm(message).await;
        }
        if let Some(written) = outcome.written {
            let _ = written.send(());
        }
    }

    /// Remembers jobs of earlier orders (a certificate's state keeps them) as finished ones of
    /// ours, so that a message about one that an earlier run left unconfirmed (it was stopped
    /// between its journal and the confirmation) is confirmed, not taken for another client's.
    pub(crate) fn remember_ours(&self, jobs: impl IntoIterator<Item = i64>) {
        let mut st = self.state();
        for job_id in jobs {
            if !st.finished.contains(&job_id) {
                if st.finished.len() >= FINISHED {
                    st.finished.pop_front();
                }
                st.finished.push_back(job_id);
            }
        }
    }

    /// The latest poll message seen with `ctid` while no order of this agent waited for its
    /// job, if it is still remembered: whether the job a request with a lost answer started
    /// came by, and how it stood.
    pub(crate) fn by_ctid(&self, ctid: &str) -> Option<Seen> {
        self.state()
            .seen
            .iter()
            .rev()
            .find(|(c, _)| c == ctid)
            .map(|(_, s)| s.clone())
    }

    /// The reader: runs while an order waits.
    async fn read(self: Arc<Self>) {
        let mut pause = self.interval;
        loop {
            // The pause before the read; an order that starts waiting may shorten it (unless the
            // head is held: reading more often would not move it), never lengthen it.
            let mut at = Instant::now() + pause;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => break,
                    () = self.wake.notified() => {
                        if !matches!(self.state().head, Head::Held { .. }) {
                            pause = self.interval;
                            at = at.min(Instant::now() + self.interval);
                        }
                    }
                }
            }
            {
                let mut st = self.state();
                if st.waiters.is_empty() {
                    st.reading = false;
                    return;
                }
            }
            let backoff = (pause * 2).min(self.interval_max);
            pause = match self.api.read().await {
                Err(e) => {
                    tracing::debug!(error = %e, "reading the poll queue failed");
                    let mut st = self.state();
                    st.head = match st.head {
                        Head::Failing { reads } => Head::Failing { reads: reads + 1 },
                        _ => Head::Failing { reads: 1 },
                    };
                    backoff
                }
                Ok(Polled { message: None, .. }) => {
                    self.state().head = Head::Moving;
                    backoff
                }
                Ok(Polled {
                    message: Some(m),
                    queued,
                }) => {
                    let next = if queued.is_some_and(|n| n > 1) {
                        BACKLOG_PAUSE.min(self.interval)
                    } else {
                        self.interval
                    };
                    match self.route(&m) {
                        Route::Handed { job_id, written } => {
                            // The order confirms it once its journal is written (and says so);
                            // one that learnt its job's end elsewhere first drops it unread, and
                            // the reader confirms it for the order.
                            let told = tokio::time::timeout(WRITTEN_WAIT, written).await;
                            if matches!(told, Ok(Err(_))) && self.state().finished.contains(&job_id) {
                                self.confirm(m.id).await;
                            }
                            next
                        }
                        Route::Confirm => {
                            self.confirm(m.id).await;
                            next
                        }
                        Route::Leave => backoff,
                    }
                }
            };
        }
    }

    /// Decides what becomes of a message at the head of the queue.
    fn route(&self, m: &PollMessage) -> Route {
        let mut st = self.state();
        let job_id = m.job.as_ref().map(|j| j.id);
        let ctid = m.ctid();
        let waited = job_id.filter(|id| st.waiters.contains_key(id)).or_else(|| {
            let ctid = ctid?;
            st.waiters
                .iter()
                .find(|(_, w)| w.ctid.as_deref() == Some(ctid))
                .map(|(id, _)| *id)
        });
        let news = JobNews::of_message(m);
        if let Some(key) = waited
            && let Some(w) = st.waiters.get_mut(&key)
        {
            if news.certificate_id.is_some() {
                w.certificate_id = news.certificate_id;
            }
            if !news.status.is_final() {
                tracing::debug!(
                    job_id = key,
                    status = news.status.as_str(),
                    sub_status = m
                        .job
                        .as_ref()
                        .and_then(|j| j.sub_status.as_deref())
                        .map(crate::text::printable)
                        .unwrap_or_default(),
                    "the job is under way"
                );
                st.head = Head::Moving;
                return Route::Confirm;
            }
            if let Some(tx) = w.tx.take() {
                let (written, told) = oneshot::channel();
                let outcome = Outcome {
                    news,
                    source: Source::Poll(m.id),
                    written: Some(written),
                };
                if tx.send(outcome).is_ok() {
                    st.head = Head::Moving;
                    return Route::Handed {
                        job_id: key,
                        written: told,
                    };
                }
            }
            // Handed over before and its journal not yet written: it stays for now.
        } else if job_id.is_some_and(|id| st.finished.contains(&id)) {
            st.head = Head::Moving;
            return Route::Confirm;
        } else if let Some(ctid) = ctid {
            st.remember(
                ctid,
                Seen {
                    message_id: m.id,
                    job_id,
                    status: m.job.as_ref().and_then(|j| j.status.clone()),
                    certificate_id: news.certificate_id,
                },
            );
        }
        let reads = match st.head {
            Head::Held { id, reads } if id == m.id => reads + 1,
            _ => 1,
        };
        st.head = Head::Held { id: m.id, reads };
        if reads == HELD_READS {
            tracing::info!(
                message = m.id,
                job_id = job_id.unwrap_or_default(),
                "a poll message that is not certkeeper's to confirm stays at the head of the queue; waiting orders ask for their jobs directly"
            );
        } else {
            tracing::debug!(
                message = m.id,
                job_id = job_id.unwrap_or_default(),
                "a poll message that is not certkeeper's heads the queue"
            );
        }
        Route::Leave
    }

    async fn confirm(&self, message: i64) {
        if let Err(e) = self.api.confirm_message(message).await {
            tracing::debug!(message, error = %e, "confirming a poll message failed; it is confirmed when read again");
        }
    }

    /// Whether an order that waited `waited` should ask for its job itself this round.
    fn should_look(&self, waited: Duration) -> bool {
        let quiet = (self.interval_max * QUIET).max(QUIET_MIN);
        waited >= quiet
            || match self.state().head {
                Head::Held { reads, .. } | Head::Failing { reads } => reads >= HELD_READS,
                Head::Moving => false,
            }
    }

    fn certificate_id(&self, job_id: i64) -> Option<i64> {
        self.state().waiters.get(&job_id)?.certificate_id
    }

    fn note_certificate(&self, job_id: i64, certificate_id: i64) {
        if let Some(w) = self.state().waiters.get_mut(&job_id) {
            w.certificate_id = Some(certificate_id);
        }
    }
}

impl State {
    fn remember(&mut self, ctid: &str, seen: Seen) {
        self.seen.retain(|(c, _)| c != ctid);
        if self.seen.len() >= SEEN {
            self.seen.pop_front();
        }
        self.seen.push_back((ctid.to_string(), seen));
    }
}

/// An order waiting for its job; dropping it ends the wait.
pub(crate) struct Waiting<A: JobApi = Client> {
    dispatcher: Arc<Dispatcher<A>>,
    job_id: i64,
    token: u64,
    rx: Option<oneshot::Receiver<Outcome>>,
    spki_sha256: Option<String>,
    started: Instant,
    /// The order's own backoff, between two rounds.
    pause: Duration,
    next_look: Instant,
    rounds: u32,
    /// No message can reach this order any more (another registered the same job): it asks.
    alone: bool,
    /// `GET /job/{id}` no longer knows the job: it ended, and its history is asked instead.
    gone_from_jobs: bool,
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
        self.rounds += 1;
        if (self.alone || self.dispatcher.should_look(self.started.elapsed()))
            && let Some(outcome) = self.look().await
        {
            return Event::Done(outcome);
        }
        self.pause = (self.pause * 2).min(self.dispatcher.interval_max);
        self.next_look = Instant::now() + self.pause;
        Event::Round(self.rounds)
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use serde_json::json;

    use super::*;

    /// The shipped defaults of `order.poll_interval`, `poll_interval_max` and `job_timeout`.
    const DEFAULTS: (Duration, Duration, Duration) = (
        Duration::from_secs(2),
        Duration::from_secs(60),
        Duration::from_secs(3600),
    );
    /// What one request costs at the API's limit of 3 per second.
    const LATENCY: Duration = Duration::from_millis(334);
    /// A message of another client's, which nobody confirms.
    const FOREIGN: i64 = 1;

    /// A job of the fake API: under way (`waiting` as its status) until `ends`, then `end`.
    struct Job {
        id: i64,
        ends: Instant,
        end: JobStatus,
        waiting: JobStatus,
        certificate_id: i64,
        ctid: Option<String>,
        /// Once ended, `GET /job/{id}` no longer knows it (as the real API).
        leaves_jobs: bool,
        /// Once ended, `GET /job/history/{id}` knows it.
        in_history: bool,
        /// The leaf the certificate holds once the job issued it.
        leaf: Option<String>,
    }

    /// A fake API on the paused clock: its poll queue, jobs and certificates, and every call.
    #[derive(Default)]
    struct Fake {
        inner: StdMutex<FakeInner>,
    }

    #[derive(Default)]
    struct FakeInner {
        jobs: Vec<Job>,
        /// The poll queue, oldest first: each message visible from its time on.
        queue: Vec<(Instant, i64, serde_json::Value)>,
        next_message: i64,
        calls: Vec<String>,
    }

    fn unknown() -> api::Error {
        api::Error::Refused {
            http: 404,
            code: "E300114".into(),
            text: "job not found".into(),
            messages: vec!["EF300101 Der Auftrag wurde nicht gefunden.".into()],
        }
    }

    fn object_job(j: &Job, status: &JobStatus) -> ObjectJob {
        serde_json::from_value(json!({
            "job": { "id": j.id, "status": status.as_str(), "type": "ssl" },
            "object": { "type": "Certificate", "value": "example.com", "data": { "id": j.certificate_id } }
        }))
        .unwrap()
    }

    impl Fake {
        fn new() -> Self {
            let fake = Self::default();
            fake.inner.lock().unwrap().next_message = 100;
            fake
        }

        /// Another client's message, at the head of the queue from now on.
        fn foreign(&self) {
            let mut f = self.inner.lock().unwrap();
            let m = json!({ "id": FOREIGN, "ctid": "someone-else", "job": { "id": 999, "status": "SUCCESS", "type": "ssl" },
                "object": { "type": "Certificate", "value": "other.example.org", "data": { "id": 999 } } });
            f.queue.insert(0, (Instant::now(), FOREIGN, m));
        }

        /// Queues a message about `job` with `status`, visible from `at`; returns its id.
        fn message(&self, job: i64, status: &str, ctid: Option<&str>, at: Instant) -> i64 {
            let mut f = self.inner.lock().unwrap();
            let id = f.next_message;
            f.next_message += 1;
            let m = json!({ "id": id, "ctid": ctid, "job": { "id": job, "status": status, "subStatus": "WF_DNS_AUTH", "type": "ssl" },
                "object": { "type": "Certificate", "value": "example.com", "data": { "id": job + 5000 } } });
            let pos = f.queue.iter().position(|(t, _, _)| *t > at).unwrap_or(f.queue.len());
            f.queue.insert(pos, (at, id, m));
            id
        }

        /// A job that ends with SUCCESS `after` from now, its message queued then.
        fn new_job(&self, id: i64, after: Duration) -> Job {
            Job {
                id,
                ends: Instant::now() + after,
                end: JobStatus::Success,
                waiting: JobStatus::Running,
                certificate_id: id + 5000,
                ctid: Some(format!("certkeeper-{id}")),
                leaves_jobs: false,
                in_history: false,
                leaf: None,
            }
        }

        fn add(&self, job: Job, with_message: bool) {
            if with_message {
                let (id, end, at, ctid) = (job.id, job.end.as_str().to_string(), job.ends, job.ctid.clone());
                self.message(id, &end, ctid.as_deref(), at);
            }
            self.inner.lock().unwrap().jobs.push(job);
        }

        fn calls(&self) -> Vec<String> {
            self.inner.lock().unwrap().calls.clone()
        }

        fn count(&self, prefix: &str) -> usize {
            self.calls().iter().filter(|c| c.starts_with(prefix)).count()
        }

        /// The id of the message at the head of the queue now.
        fn head(&self) -> Option<i64> {
            let f = self.inner.lock().unwrap();
            let now = Instant::now();
            f.queue.iter().find(|(t, _, _)| *t <= now).map(|(_, id, _)| *id)
        }

        async fn call(&self, what: String) {
            self.inner.lock().unwrap().calls.push(what);
            tokio::time::sleep(LATENCY).await;
        }
    }

    impl JobApi for Arc<Fake> {
        async fn read(&self) -> Result<Polled, api::Error> {
            self.call("GET /poll".into()).await;
            let f = self.inner.lock().unwrap();
            let now = Instant::now();
            let visible: Vec<_> = f.queue.iter().filter(|(t, _, _)| *t <= now).collect();
            Ok(Polled {
                message: visible
                    .first()
                    .map(|(_, _, m)| serde_json::from_value(m.clone()).unwrap()),
                queued: Some(visible.len() as i64),
            })
        }

        async fn confirm_message(&self, message: i64) -> Result<(), api::Error> {
            self.call(format!("PUT /poll/{message}")).await;
            self.inner.lock().unwrap().queue.retain(|(_, id, _)| *id != message);
            Ok(())
        }

        async fn job(&self, id: i64) -> Result<ObjectJob, api::Error> {
            self.call(format!("GET /job/{id}")).await;
            let f = self.inner.lock().unwrap();
            let j = f.jobs.iter().find(|j| j.id == id).ok_or_else(unknown)?;
            match Instant::now() >= j.ends {
                false => Ok(object_job(j, &j.waiting)),
                true if j.leaves_jobs => Err(unknown()),
                true => Ok(object_job(j, &j.end)),
            }
        }

        async fn job_history(&self, id: i64) -> Result<ObjectJob, api::Error> {
            self.call(format!("GET /job/history/{id}")).await;
            let f = self.inner.lock().unwrap();
            match f.jobs.iter().find(|j| j.id == id) {
                Some(j) if j.in_history && Instant::now() >= j.ends => Ok(object_job(j, &j.end)),
                _ => Err(unknown()),
            }
        }

        async fn certificate(&self, id: i64) -> Result<Certificate, api::Error> {
            self.call(format!("GET /certificate/{id}")).await;
            let f = self.inner.lock().unwrap();
            let j = f.jobs.iter().find(|j| j.certificate_id == id).ok_or_else(unknown)?;
            let server = j.leaf.clone().filter(|_| Instant::now() >= j.ends);
            Ok(serde_json::from_value(json!({ "id": id, "server": server, "serialNumber": "NOT_SET" })).unwrap())
        }
    }

    fn dispatcher(fake: &Arc<Fake>, settings: (Duration, Duration, Duration)) -> Arc<Dispatcher<Arc<Fake>>> {
        Arc::new(Dispatcher::new(fake.clone(), settings.0, settings.1))
    }

    fn wanted(job_id: i64) -> Wanted {
        Wanted {
            job_id,
            ctid: Some(format!("certkeeper-{job_id}")),
            certificate_id: None,
            spki_sha256: None,
        }
    }

    /// Waits for the job as an order does, to its end or the job timeout.
    async fn follow(w: &mut Waiting<Arc<Fake>>, timeout: Duration) -> Option<Outcome> {
        let deadline = Instant::now() + timeout;
        for _ in 0..10_000 {
            match w.next(deadline).await {
                Event::Done(o) => return Some(o),
                Event::Round(_) => {}
                Event::TimedOut => return None,
            }
        }
        None
    }

    /// Another client's message at the head of the queue that stays there for ten minutes, with
    /// the shipped poll settings: five orders started two minutes apart each follow their job to
    /// its end through `GET /job` within a minute of it, and the message is never confirmed.
    #[tokio::test(start_paused = true)]
    async fn a_foreign_message_at_the_head_for_ten_minutes_neither_stalls_an_order_nor_is_confirmed() {
        let fake = Arc::new(Fake::new());
        fake.foreign();
        let d = dispatcher(&fake, DEFAULTS);
        let t0 = Instant::now();
        for k in 0..5 {
            tokio::time::sleep_until(t0 + Duration::from_secs(120) * k).await;
            let id = 10 + i64::from(k);
            fake.add(fake.new_job(id, Duration::from_secs(30)), true);
            let started = Instant::now();
            let mut w = d.wait(wanted(id));
            let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
            assert_eq!(
                (o.news.status.clone(), o.source),
                (JobStatus::Success, Source::Job),
                "order {k}"
            );
            assert_eq!(o.news.certificate_id, Some(id + 5000));
            let took = started.elapsed();
            assert!(took < Duration::from_secs(30 + 60), "order {k} took {took:?}");
            d.finished(id, o).await;
            drop(w);
            let asked = fake.count(&format!("GET /job/{id}"));
            assert!((1..=6).contains(&asked), "order {k} asked for its job {asked} times");
        }
        tokio::time::sleep_until(t0 + Duration::from_secs(600)).await;
        assert_eq!(fake.head(), Some(FOREIGN), "the foreign message left the head");
        assert!(
            !fake.calls().iter().any(|c| c.starts_with("PUT /poll")),
            "a message was confirmed: {:?}",
            fake.calls()
        );
        // The reader read on its backoff while orders waited, not at every round of every order.
        let reads = fake.count("GET /poll");
        assert!(reads <= 5 * 6, "{reads} reads");
        // It is remembered by its ctid (not ours: no order waited for it).
        let seen = d.by_ctid("someone-else").expect("the foreign message is remembered");
        assert_eq!((seen.message_id, seen.job_id), (FOREIGN, Some(999)));
    }

    /// A job that is DEFERRED (the CA waits for the DNS record) first and ends later is followed
    /// to its end through the queue: the DEFERRED message is noted and confirmed so that the head
    /// moves, the final one is confirmed only after the order says its journal is written.
    #[tokio::test(start_paused = true)]
    async fn a_deferred_message_is_progress_and_the_final_one_ends_the_wait() {
        let fake = Arc::new(Fake::new());
        let d = dispatcher(&fake, DEFAULTS);
        let now = Instant::now();
        let mut job = fake.new_job(7, Duration::from_secs(45));
        job.waiting = JobStatus::Deferred;
        let deferred = fake.message(7, "DEFERRED", Some("certkeeper-7"), now + Duration::from_secs(5));
        // The misspelling one help page shows is the same state.
        let misspelt = fake.message(7, "DEFFERED", Some("certkeeper-7"), now + Duration::from_secs(9));
        fake.add(job, true);
        let mut w = d.wait(wanted(7));
        let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
        assert_eq!(o.news.status, JobStatus::Success);
        let Source::Poll(final_message) = o.source else {
            panic!("learnt from {:?}", o.source)
        };
        let calls = fake.calls();
        assert!(calls.contains(&format!("PUT /poll/{deferred}")), "{calls:?}");
        assert!(calls.contains(&format!("PUT /poll/{misspelt}")), "{calls:?}");
        assert_eq!(fake.count("GET /job"), 0, "{calls:?}");
        // Not confirmed before the order's journal is written...
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!fake.calls().contains(&format!("PUT /poll/{final_message}")));
        assert_eq!(fake.head(), Some(final_message));
        // ...and at once after.
        d.finished(7, o).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(fake.calls().contains(&format!("PUT /poll/{final_message}")));
        assert_eq!(fake.head(), None);
    }

    /// A finished job that `GET /job/{id}` no longer knows (404, EF300101) is found under
    /// `GET /job/history/{id}`; one that neither knows is recognised on its certificate, whose
    /// leaf certifies the order's key.
    #[tokio::test(start_paused = true)]
    async fn a_job_gone_from_the_job_route_is_followed_through_its_history_then_its_certificate() {
        use sha2::{Digest, Sha256};
        let fake = Arc::new(Fake::new());
        fake.foreign();
        let d = dispatcher(&fake, DEFAULTS);

        let mut job = fake.new_job(20, Duration::from_secs(20));
        job.leaves_jobs = true;
        job.in_history = true;
        fake.add(job, true);
        let mut w = d.wait(wanted(20));
        let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
        assert_eq!((o.news.status.clone(), o.source), (JobStatus::Success, Source::History));
        assert_eq!(o.news.certificate_id, Some(5020));
        d.finished(20, o).await;
        drop(w);
        assert!(fake.count("GET /job/history/20") >= 1);

        // Neither route knows it: the certificate does, issued for our key (and only then).
        let key = crate::keys::PrivateKey::generate(crate::config::KeyKind::EcdsaP256).unwrap();
        let spki = key.public_key_der();
        let ca = autodns_sim::ca::TestCa::new().unwrap();
        let not_after = time::OffsetDateTime::now_utc() + time::Duration::days(30);
        let issued = ca
            .issue(&spki, &["www.example.com".to_string()], false, not_after, None)
            .unwrap();
        let mut job = fake.new_job(21, Duration::from_secs(20));
        job.leaves_jobs = true;
        job.leaf = Some(issued.leaf_pem);
        fake.add(job, true);
        let mut w = d.wait(Wanted {
            certificate_id: Some(5021),
            spki_sha256: Some(Sha256::digest(&spki).iter().map(|b| format!("{b:02x}")).collect()),
            ..wanted(21)
        });
        let started = Instant::now();
        let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
        assert_eq!(
            (o.news.status.clone(), o.source),
            (JobStatus::Success, Source::Certificate)
        );
        assert_eq!(o.news.certificate_id, Some(5021));
        assert!(
            started.elapsed() >= Duration::from_secs(20),
            "issued before the job ended"
        );
        assert_eq!(fake.head(), Some(FOREIGN));
        assert!(!fake.calls().iter().any(|c| c.starts_with("PUT /poll")));
    }

    /// Eight orders in flight, their jobs ending a second apart: one reader reads the queue for
    /// all of them, one read and one confirmation per message, and no order asks for its job.
    #[tokio::test(start_paused = true)]
    async fn eight_orders_in_flight_share_one_reader() {
        let fake = Arc::new(Fake::new());
        let d = dispatcher(&fake, DEFAULTS);
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..8 {
            let id = 30 + k;
            fake.add(
                fake.new_job(id, Duration::from_secs(5) + Duration::from_secs(1) * k as u32),
                true,
            );
            let d = d.clone();
            tasks.spawn(async move {
                let mut w = d.wait(wanted(id));
                let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
                assert!(matches!(o.source, Source::Poll(_)), "{:?}", o.source);
                d.finished(id, o).await;
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
        let calls = fake.calls();
        assert_eq!(fake.count("PUT /poll/"), 8, "{calls:?}");
        assert_eq!(fake.count("GET /job"), 0, "{calls:?}");
        let reads = fake.count("GET /poll");
        // Every message once, and a few empty reads while the first jobs ran: eight orders
        // polling on their own read at least 8 x 3 times in those first 5 s alone.
        assert!((8..=12).contains(&reads), "{reads} reads: {calls:?}");
        assert_eq!(fake.head(), None);
        // The reader stopped with the last order: nothing is read while nobody waits.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(fake.count("GET /poll"), reads);
    }

    /// A message about a job an order waits for is routed by its ctid where its job id is not
    /// one an order registered; one with a ctid nobody waits for is remembered, at most
    /// [`SEEN`] of them, and left in the queue.
    #[tokio::test(start_paused = true)]
    async fn messages_are_routed_by_ctid_and_others_remembered_by_it() {
        let fake = Arc::new(Fake::new());
        let d = dispatcher(
            &fake,
            (Duration::from_millis(50), Duration::from_millis(500), DEFAULTS.2),
        );
        let now = Instant::now();
        let lost = fake.message(77, "SUCCESS", Some("lost-answer"), now);
        let mut w = d.wait(Wanted {
            job_id: 40,
            ctid: Some("certkeeper-40".into()),
            ..Wanted::default()
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let seen = d.by_ctid("lost-answer").expect("remembered");
        assert_eq!(
            seen,
            Seen {
                message_id: lost,
                job_id: Some(77),
                status: Some(JobStatus::Success),
                certificate_id: Some(5077),
            }
        );
        assert_eq!(fake.head(), Some(lost), "a message that is not ours was confirmed");
        assert_eq!(d.by_ctid("never-seen"), None);
        // Ours by its ctid, whatever its job id: handed over, then confirmed.
        fake.inner.lock().unwrap().queue.clear();
        let mine = fake.message(41, "FAILED", Some("certkeeper-40"), Instant::now());
        let o = follow(&mut w, DEFAULTS.2).await.expect("the order ended");
        assert_eq!(
            (o.news.status.clone(), o.source),
            (JobStatus::Failed, Source::Poll(mine))
        );
        d.finished(40, o).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fake.head(), None);

        let mut st = State::default();
        for i in 0..(SEEN as i64 + 44) {
            let s = Seen {
                message_id: i,
                job_id: None,
                status: None,
                certificate_id: None,
            };
            st.remember(&format!("c-{i}"), s);
        }
        st.remember(
            "c-300",
            Seen {
                message_id: 1000,
                job_id: None,
                status: None,
                certificate_id: None,
            },
        );
        assert_eq!(st.seen.len(), SEEN);
        assert!(st.seen.iter().all(|(c, _)| c != "c-0"), "the oldest is forgotten first");
        assert_eq!(st.seen.iter().filter(|(c, _)| c == "c-300").count(), 1);
    }

    /// A leftover about one of our finished jobs (a duplicate, or one whose order learnt its
    /// end elsewhere) is confirmed when it reaches the head; at most [`FINISHED`] are kept.
    #[tokio::test(start_paused = true)]
    async fn leftovers_about_finished_jobs_are_confirmed_and_the_memory_is_bounded() {
        let fake = Arc::new(Fake::new());
        let d = dispatcher(&fake, DEFAULTS);
        let mut w = d.wait(wanted(50));
        let outcome = Outcome {
            news: JobNews {
                status: JobStatus::Success,
                certificate_id: None,
                reason: String::new(),
            },
            source: Source::Job,
            written: None,
        };
        d.finished(51, outcome).await;
        let leftover = fake.message(51, "SUCCESS", None, Instant::now());
        let theirs = fake.message(52, "SUCCESS", None, Instant::now() + Duration::from_secs(1));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(w.next(deadline).await, Event::TimedOut) {}
        assert!(fake.calls().contains(&format!("PUT /poll/{leftover}")));
        assert_eq!(fake.head(), Some(theirs));
        drop(w);

        for id in 0..(FINISHED as i64 + 10) {
            let o = Outcome {
                news: JobNews {
                    status: JobStatus::Success,
                    certificate_id: None,
                    reason: String::new(),
                },
                source: Source::Job,
                written: None,
            };
            d.finished(1000 + id, o).await;
        }
        let st = d.state();
        assert_eq!(st.finished.len(), FINISHED);
        assert!(!st.finished.contains(&1000) && st.finished.contains(&(1000 + FINISHED as i64 + 9)));
    }
}
