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
            Event::Round => {}
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
