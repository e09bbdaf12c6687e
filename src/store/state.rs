//! The on-disk state of one certificate, versioned: what it knows of its order and
//! certificate, and the journal of the order in flight. This is a format users' files are
//! written in: a change here must keep old files loading (serde defaults) and bump
//! [`STATE_VERSION`] when older certkeepers could no longer read the new files.

use serde::{Deserialize, Serialize};

use crate::dns::DcvRecord;

/// The state format's version, written into every state file.
pub const STATE_VERSION: u32 = 1;

/// What an order does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderKind {
    /// A new order (paid).
    Create,
    /// A new certificate within the term (free).
    Reissue,
    /// The next term (paid).
    Renew,
}

impl OrderKind {
    /// As logs, messages and `status` name it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Reissue => "reissue",
            Self::Renew => "renew",
        }
    }

    pub fn is_paid(self) -> bool {
        matches!(self, Self::Create | Self::Renew)
    }
}

/// The steps of one order. Each is written to the journal before the side effect it enables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Decided; the key is being made.
    Planned,
    /// The key is on disk and the CSR built.
    Keyed,
    /// prepareOrder answered with the validation records.
    Prepared,
    /// The DNS hook published the records.
    DnsPublished,
    /// Every authoritative nameserver serves them (or AutoDNS provisions them).
    DnsVerified,
    /// The paid or reissue request is about to leave, with this ctid.
    Sending,
    /// The API accepted it; the job id is known.
    Accepted,
    /// The job ended with success; the certificate id is known.
    JobDone,
    /// The certificate and chain are here.
    Downloaded,
    /// The generation directory is written.
    Installed,
}

impl Step {
    pub const ALL: [Step; 10] = [
        Step::Planned,
        Step::Keyed,
        Step::Prepared,
        Step::DnsPublished,
        Step::DnsVerified,
        Step::Sending,
        Step::Accepted,
        Step::JobDone,
        Step::Downloaded,
        Step::Installed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Planned => "planned",
            Step::Keyed => "keyed",
            Step::Prepared => "prepared",
            Step::DnsPublished => "dns_published",
            Step::DnsVerified => "dns_verified",
            Step::Sending => "sending",
            Step::Accepted => "accepted",
            Step::JobDone => "job_done",
            Step::Downloaded => "downloaded",
            Step::Installed => "installed",
        }
    }
}

/// The journal of the order in flight.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OrderJournal {
    pub id: String,
    pub kind: OrderKind,
    pub step: Step,
    pub started_at: i64,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex.
    #[serde(default)]
    pub spki_sha256: Option<String>,
    /// The order's new private key (PKCS#8 PEM); it moves to the generation directory once issued.
    #[serde(default)]
    pub key: Option<KeyPem>,
    #[serde(default)]
    pub csr: Option<String>,
    #[serde(default)]
    pub records: Vec<DcvRecord>,
    /// `validation = "file"`: the files prepareOrder named, one per name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::webroot::FileRecord>,
    /// `validation = "email"`: the address the approval mail goes to, as ordered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    /// Since when (unix time) the order's job waits for its approval mail to be answered: the
    /// operator was told then, once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_approval_since: Option<i64>,
    #[serde(default)]
    pub ctid: Option<String>,
    #[serde(default)]
    pub sent_at: Option<i64>,
    #[serde(default)]
    pub job_id: Option<i64>,
    #[serde(default)]
    pub certificate_id: Option<i64>,
    #[serde(default)]
    pub leaf: Option<String>,
    #[serde(default)]
    pub chain: Vec<String>,
    #[serde(default)]
    pub generation: Option<u32>,
    #[serde(default)]
    pub term_end: Option<i64>,
    /// When the paid request left, on the host's boot clock (which the wall clock's jumps do
    /// not move): how long the search for a lost answer has run is measured on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_boot: Option<BootTime>,
    /// The certificate ids certkeeper knew of when the request left: a certificate found by
    /// name later that is not among them is the order's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_certificates: Vec<i64>,
    /// The API answered the paid request, but with nothing readable: it arrived, so no search
    /// can prove that it did not.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub answer_unreadable: bool,
    /// How many complete searches (every source answered) found no trace of the request.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub clean_searches: u32,
    /// Since when (unix time) the outcome of the paid request is "payment unresolved": the
    /// grace has passed and the evidence does not settle it; `certkeeper resolve` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unresolved_since: Option<i64>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A moment on the host's boot clock (`CLOCK_BOOTTIME`), with the boot it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootTime {
    pub boot_id: String,
    pub secs: u64,
}

impl BootTime {
    /// Now, or `None` where the boot clock or the boot id cannot be read.
    pub fn now() -> Option<Self> {
        let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
        Some(Self {
            boot_id: boot_id.trim().to_string(),
            secs: t.tv_sec as u64,
        })
    }

    /// Seconds since `self` on the boot clock, if this is still the same boot.
    pub fn elapsed(&self) -> Option<u64> {
        let now = Self::now()?;
        (now.boot_id == self.boot_id).then(|| now.secs.saturating_sub(self.secs))
    }
}

/// A private key in PEM inside the journal. Its `Debug` never shows the key.
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyPem(pub String);

impl std::fmt::Debug for KeyPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyPem(..)")
    }
}

/// One paid request, kept so that the spend guard can count them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PaidRequest {
    pub kind: OrderKind,
    pub ctid: String,
    pub sent_at: i64,
    /// Which term it pays for: 0 for the first order, else the end (unix time) of the term renewed.
    pub term: i64,
    pub status: PaidStatus,
    #[serde(default)]
    pub job_id: Option<i64>,
}

/// What is known of a paid request, as written in the state file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaidStatus {
    /// Sent; the answer is pending or was lost.
    Sent,
    /// The API accepted it: it is paid for.
    Accepted,
    /// Proven never to have arrived.
    NotMade,
}

/// The state of one certificate.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CertState {
    pub version: u32,
    pub name: String,
    #[serde(default)]
    pub certificate_id: Option<i64>,
    /// The end of the order term (the API's `payable`), unix time.
    #[serde(default)]
    pub term_end: Option<i64>,
    #[serde(default)]
    pub serial: Option<String>,
    #[serde(default)]
    pub not_before: Option<i64>,
    #[serde(default)]
    pub not_after: Option<i64>,
    /// The generation `live_dir/NAME` should point at.
    #[serde(default)]
    pub generation: Option<u32>,
    /// Whether the reload hook accepted the live generation.
    #[serde(default)]
    pub deployed: bool,
    /// An issued generation whose reload failed; retried on the next run.
    #[serde(default)]
    pub pending_deploy: Option<u32>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[serde(default)]
    pub last_success: Option<i64>,
    #[serde(default)]
    pub failures: u32,
    /// When the last failed attempt ended, unix time.
    #[serde(default)]
    pub last_failure: Option<i64>,
    /// The API asked not to retry before this time.
    #[serde(default)]
    pub retry_after: Option<i64>,
    #[serde(default)]
    pub paid: Vec<PaidRequest>,
    #[serde(default)]
    pub order: Option<OrderJournal>,
    /// What the installed certificate was issued for, so that a changed configuration (another
    /// name, another key) is noticed. Absent in states written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issued_for: Option<IssuedFor>,
    /// The jobs of this certificate's latest requests (at most [`KEPT_JOBS`]), so that the
    /// search for a lost answer never takes an earlier request's job for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<i64>,
    /// prepareOrder refused the CSR on one line (as the help page asks it) and took the form
    /// InterNetX's SDKs send (`BEGIN\r\nbody\r\nEND`): the orders of this certificate use that.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub csr_crlf: bool,
    /// What waits for the operator: something to buy that the configuration does not allow, or
    /// a choice between the account's orders. Nothing is bought until it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<Consent>,
    /// What each `serve_check` address handed out at the last check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub served: Vec<Served>,
    /// The last served check found an address that does not hand out the certificate it
    /// expected: "ADDRESS serves SERIAL for NAME".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_served: Option<String>,
    /// `certkeeper revoke` under way: the old certificate is revoked only once a new one is
    /// deployed, and only once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
    /// The serials certkeeper revoked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<Revoked>,
}

/// Why a certificate is revoked (`certkeeper revoke --reason`). The SSL Manager's revoke takes
/// no reason: it is certkeeper's record, and what decides that a revoke is wanted at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeReason {
    KeyCompromise,
    Superseded,
    Cessation,
}

impl RevokeReason {
    /// As the command line names it.
    pub fn name(self) -> &'static str {
        match self {
            Self::KeyCompromise => "key-compromise",
            Self::Superseded => "superseded",
            Self::Cessation => "cessation",
        }
    }
}

/// Where a revocation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeStep {
    /// Decided: a new certificate is reissued and deployed first.
    Planned,
    /// The new certificate is deployed; the revoke request is about to leave. Resumed here, the
    /// certificate's `histories` are looked at first.
    Sending,
}

/// The journal of `certkeeper revoke`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// The serial to revoke: the one that was live when the revocation was asked for.
    pub serial: String,
    pub reason: RevokeReason,
    pub step: RevokeStep,
    pub since: i64,
    #[serde(default)]
    pub ctid: Option<String>,
    /// The order the serial belongs to, as it was when the revocation was asked for (a later
    /// renewal may belong to another).
    #[serde(default)]
    pub certificate_id: Option<i64>,
}

/// A serial certkeeper revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub serial: String,
    pub reason: RevokeReason,
    pub at: i64,
}

/// What one `serve_check` address handed out at a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    pub address: String,
    /// The name asked for (SNI): the first that did not get `expected`, else any.
    pub name: String,
    /// The serial the check expected: the new one after a deploy, else the live one.
    pub expected: String,
    /// The serial handed out, if a certificate was.
    #[serde(default)]
    pub serial: Option<String>,
    /// The expiry of the certificate handed out, unix time.
    #[serde(default)]
    pub not_after: Option<i64>,
    /// Why no certificate was read (the connection was refused, the handshake failed).
    #[serde(default)]
    pub error: Option<String>,
    /// When, unix time.
    pub at: i64,
}

impl Served {
    /// Whether the address handed out the expected certificate for every name.
    pub fn ok(&self) -> bool {
        self.serial.as_deref() == Some(self.expected.as_str())
    }

    /// What it handed out instead: "ADDRESS serves SERIAL for NAME".
    pub fn mismatch(&self) -> String {
        match (&self.serial, &self.error) {
            (Some(serial), _) => format!("{} serves {serial} for {}", self.address, self.name),
            (None, Some(e)) => format!("{} serves nothing for {}: {e}", self.address, self.name),
            (None, None) => format!("{} serves nothing for {}", self.address, self.name),
        }
    }
}

/// A paid step (or a choice) the configuration does not allow, as the state file keeps it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Consent {
    /// What waits: "a new 12-month order of QUICKSSLPREMIUM", "a choice between ...".
    pub what: String,
    /// How the operator gives it.
    pub give: String,
    /// Since when it waits, unix time.
    pub since: i64,
    /// The settings it was refused under; once they change, it is asked again at once.
    pub settings: String,
}

/// How many job ids a certificate's state keeps.
pub const KEPT_JOBS: usize = 32;

impl CertState {
    /// Remembers a job of one of this certificate's requests.
    pub fn remember_job(&mut self, id: i64) {
        if !self.jobs.contains(&id) {
            self.jobs.push(id);
        }
        let excess = self.jobs.len().saturating_sub(KEPT_JOBS);
        self.jobs.drain(..excess);
    }
}

/// The configuration a certificate was issued for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedFor {
    /// Every name, sorted.
    pub names: Vec<String>,
    /// The key type, as the configuration names it (`ecdsa-p256`, ...).
    pub key: String,
}
