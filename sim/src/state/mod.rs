//! The simulated SSL Manager's memory: contacts, certificates (orders), jobs, the poll queue,
//! the ledger of paid requests and the request log, with the rules the API enforces.
//!
//! Every operation takes the caller's account and returns a [`Reply`] or an [`ApiError`]; the
//! HTTP layer (`api`) turns both into the envelope. Nothing here does I/O except through the
//! DNS zone store (provisioning) and the CA (issuing), both in memory.
//!
//! One `impl State` per concern: `contacts`, `prepare` (prepareOrder and the DNS line),
//! `intake` (reading an order body), `orders` (create, reissue, renew, revoke, delete, info,
//! search), `jobs`, `poll`; `query` is the search routes' filter language, `names` the naming
//! rules, `reply` what every operation answers.

use std::collections::BTreeMap;
use std::time::Instant;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::ca::Issued;
use crate::config::{Durations, Product};
use crate::dns::ZoneStore;
use crate::faults::{CreatedPrecision, FaultDice, Faults, JobOutcome};
use crate::time::now;
use crate::wire::{BasicUser, CertificateHistory, Message, PollMessage, SslContactOut};

mod contacts;
mod intake;
mod jobs;
mod names;
mod orders;
mod poll;
mod prepare;
mod query;
mod reply;

pub(crate) use prepare::FILE_PATH;
use reply::Result;
pub use reply::{ApiError, Reply};

/// One line of the ledger: what would have been charged (create, renew) or done for free (reissue).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    pub kind: String,
    pub charged: bool,
    pub certificate_id: i64,
    pub job_id: i64,
    pub name: String,
    pub product: String,
    pub ctid: Option<String>,
    pub user: String,
    pub time: String,
    /// The serial a revoke named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

/// One line of the request log. It never holds a password.
#[derive(Clone, Debug, Serialize)]
pub struct RequestEntry {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: Option<Value>,
    pub ctid: Option<String>,
    pub user: Option<String>,
    pub status: u16,
    /// The fault injected into this request, if any.
    pub fault: Option<String>,
    pub time: String,
    /// Already in the log (a hanging request logs itself before it hangs).
    #[serde(skip)]
    pub logged: bool,
}

/// How an order proves domain control: the method, the token its records carry, whether
/// AutoDNS provisions the records itself, and the product's record name prefix.
#[derive(Clone, Debug)]
struct Auth {
    method: String,
    /// The DNS record's value, or the FILE validation's file content.
    token: String,
    /// EMAIL: where the approval mail went.
    approvers: Vec<String>,
    provisioning: bool,
    /// `""` or `"_dnsauth."`: the DNS record for a name sits at `prefix + name`.
    prefix: &'static str,
}

impl Auth {
    /// The DNS validation record's name for `name` (without the trailing dot).
    fn record(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

/// A certificate order as the service keeps it.
#[derive(Clone, Debug)]
struct Cert {
    id: i64,
    owner: BasicUser,
    name: String,
    names: Vec<String>,
    product: &'static Product,
    months: i64,
    software: Option<String>,
    csr: String,
    admin: Option<i64>,
    tech: Option<i64>,
    auth: Auth,
    issued: Option<Issued>,
    term_end: OffsetDateTime,
    histories: Vec<CertificateHistory>,
    order_id: String,
    firstname: Option<String>,
    lastname: Option<String>,
    /// S/MIME: the organizational unit and the download password, as the order gave them.
    organization_unit_name: Option<String>,
    password: Option<String>,
    comment: Option<String>,
    created: OffsetDateTime,
    updated: OffsetDateTime,
    busy_job: Option<i64>,
}

/// What a job will issue when it completes.
#[derive(Clone, Debug)]
struct Pending {
    names: Vec<String>,
    spki: Vec<u8>,
    csr: String,
    mail: bool,
    auth: Auth,
    months: i64,
}

/// A job as the service keeps it.
#[derive(Clone, Debug)]
struct JobRec {
    id: i64,
    owner: BasicUser,
    cert_id: i64,
    action: &'static str,
    status: &'static str,
    sub_status: Option<&'static str>,
    product: String,
    name: String,
    ctid: Option<String>,
    created: OffsetDateTime,
    updated: OffsetDateTime,
    started: Instant,
    pending: Option<Pending>,
    outcome: JobOutcome,
    messages: Vec<Message>,
}

impl JobRec {
    /// Still running: `RUNNING`, or `DEFERRED` while its DNS record is not served.
    fn active(&self) -> bool {
        matches!(self.status, "RUNNING" | "DEFERRED")
    }
}

/// A poll message waiting for its account to poll and confirm it.
#[derive(Clone, Debug)]
struct PollRec {
    id: i64,
    owner: BasicUser,
    message: PollMessage,
    /// A foreign message (another client's job, or a system notice): its owner confirms it at
    /// this time, if our client does not first.
    foreign_until: Option<Instant>,
}

/// What the simulator counts for tests, served by `GET /_sim/stats`.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Foreign poll messages (another client's job, or a system notice) our client confirmed.
    pub foreign_confirmed: u64,
    /// Poll messages confirmed, foreign ones included.
    pub poll_confirmed: u64,
    /// Requests answered 429 by the rate limit.
    pub rate_limited: u64,
    /// Requests the rate limit held back (`rate_limit_answer: "delay"`).
    pub rate_delayed: u64,
}

/// The names prepareOrder answered a DNS token for.
#[derive(Debug)]
struct Prepared {
    names: Vec<String>,
}

/// What orders and jobs use from outside the state: the zones that provisioned DCV records go
/// to, and the durations that time order terms, renewal windows and record propagation.
#[derive(Clone, Copy, Debug)]
pub struct Env<'a> {
    pub zones: &'a ZoneStore,
    pub durations: &'a Durations,
}

/// The whole simulated service.
#[derive(Debug)]
pub struct State {
    pub faults: Faults,
    pub dice: FaultDice,
    contacts: BTreeMap<i64, SslContactOut>,
    certs: BTreeMap<i64, Cert>,
    jobs: BTreeMap<i64, JobRec>,
    poll: Vec<PollRec>,
    pub ledger: Vec<LedgerEntry>,
    pub requests: Vec<RequestEntry>,
    pub stats: Stats,
    /// Records provisioned for jobs that have ended, to be removed from the zones.
    pub stale_records: Vec<(String, String)>,
    prepared: BTreeMap<String, Prepared>,
    next_contact: i64,
    next_cert: i64,
    next_job: i64,
    next_poll: i64,
    next_stid: u64,
    /// How many foreign poll messages were made (they alternate between kinds).
    foreign_made: u64,
}

impl State {
    pub fn new(faults: Faults, seed: u64) -> Self {
        Self {
            faults,
            dice: FaultDice::new(seed),
            contacts: BTreeMap::new(),
            certs: BTreeMap::new(),
            jobs: BTreeMap::new(),
            poll: Vec::new(),
            ledger: Vec::new(),
            requests: Vec::new(),
            stats: Stats::default(),
            stale_records: Vec::new(),
            prepared: BTreeMap::new(),
            next_contact: 100,
            next_cert: 1_000_000,
            // Job ids exceed i32, as the real ones do.
            next_job: 4_297_000_000,
            next_poll: 1_400_000,
            next_stid: 1,
            foreign_made: 0,
        }
    }

    /// Forgets every object, ledger line and logged request; faults stay as they are.
    pub fn reset(&mut self) {
        let faults = std::mem::take(&mut self.faults);
        let seed_dice = std::mem::replace(&mut self.dice, FaultDice::new(0));
        *self = Self::new(faults, 0);
        self.dice = seed_dice;
    }

    /// A fresh server transaction id.
    pub fn stid(&mut self) -> String {
        self.next_stid += 1;
        format!("{}-sim-{}", now().date().to_string().replace('-', ""), self.next_stid)
    }

    /// `created` as the API shows it: to the second, or at midnight with `created_precision: day`.
    fn created(&self, t: OffsetDateTime) -> OffsetDateTime {
        match self.faults.created_precision {
            CreatedPrecision::Second => t.replace_millisecond(0).unwrap_or(t),
            CreatedPrecision::Day => t.to_offset(time::UtcOffset::UTC).replace_time(time::Time::MIDNIGHT),
        }
    }

    /// A fresh token for domain control: a timestamp and 50 seeded random characters.
    fn token(&mut self) -> String {
        let stamp = format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            now().year(),
            u8::from(now().month()),
            now().day(),
            now().hour(),
            now().minute(),
            now().second()
        );
        let tail: String = (0..50).map(|_| self.dice.rng().sample(Alphanumeric) as char).collect();
        format!("{stamp}{}", tail.to_ascii_lowercase())
    }
}

/// `n` times `unit` (a month, say), saturating.
fn scale(unit: std::time::Duration, n: i64) -> time::Duration {
    time_dur(unit.saturating_mul(u32::try_from(n).unwrap_or(u32::MAX)))
}

/// A std duration as a `time` one, saturating.
fn time_dur(d: std::time::Duration) -> time::Duration {
    time::Duration::try_from(d).unwrap_or(time::Duration::MAX)
}
