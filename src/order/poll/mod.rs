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
    /// A round of the order's backoff passed without the job's end.
    Round,
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
            // A fleet member that does not lead (now) leaves the queue alone; a deposed leader's
            // orders are stopped, and with them its waiters and this reader.
            if !crate::may_call_api() {
                pause = self.interval_max;
                continue;
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
        // A message read before this member was deposed is the new leader's to confirm.
        if !crate::may_call_api() {
            return;
        }
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

mod waiting;
pub(crate) use waiting::Waiting;

#[cfg(test)]
mod tests;
