//! The order's rules, pure (no I/O but the host name, read once): what is due ([`decide`]), the
//! one adapter from a certificate's state to the schedule ([`next`]), the moves an order may make
//! and which of them reach the disk ([`allowed`], [`persists`], [`writes`]), how an order may end
//! ([`Ending`]), and the spend guard's count ([`paid_in_term`]).

use crate::config::{CertConfig, DaemonConfig, DnsMode};
use crate::schedule;
use crate::store::{CertState, IssuedFor, OrderKind, PaidStatus, Step};

/// The schedule's policy for a certificate under the daemon settings.
pub fn policy_for(cert: &CertConfig, daemon: &DaemonConfig) -> schedule::Policy {
    schedule::Policy {
        renew_before: cert.renew_before,
        renew_term: cert.renew_term,
        term_warning: daemon.term_warning,
        backoff: daemon.retry_backoff.clone(),
        jitter_share: daemon.jitter,
    }
}

/// The schedule's view of a certificate's state.
pub fn facts(st: &CertState) -> schedule::Facts {
    schedule::Facts {
        has_order: st.certificate_id.is_some(),
        in_flight: st.order.is_some() || st.pending_deploy.is_some(),
        // A certificate issued but never installed does not count: it must be deployed first.
        not_before: st
            .not_before
            .filter(|_| st.generation.is_some() || st.pending_deploy.is_some()),
        not_after: st
            .not_after
            .filter(|_| st.generation.is_some() || st.pending_deploy.is_some()),
        term_end: st.term_end,
        failures: st.failures,
        last_failure: st.last_failure,
        retry_after: st.retry_after,
        // Needs the configuration: set by `next` and `decide`.
        changed: false,
    }
}

/// What a certificate issued now under `cert` is issued for.
pub fn issued_for(cert: &CertConfig) -> IssuedFor {
    let mut names = cert.all_names();
    names.sort();
    IssuedFor {
        names,
        key: cert.key.name().to_string(),
    }
}

/// How the configuration changed since the installed certificate was issued, if it did: new or
/// removed names, or another key type. Such a certificate is due for a reissue at once.
pub fn changed(cert: &CertConfig, st: &CertState) -> Option<String> {
    let was = st.issued_for.as_ref()?;
    let now = issued_for(cert);
    if was.names != now.names {
        return Some(format!(
            "the names changed from {} to {}",
            was.names.join(", "),
            now.names.join(", ")
        ));
    }
    if was.key != now.key {
        return Some(format!("the key type changed from {} to {}", was.key, now.key));
    }
    None
}

/// The schedule's next decision for a certificate: when it is due, and for what. The one place
/// that puts a certificate's facts, policy and jitter seed together.
pub fn next(cert: &CertConfig, st: &CertState, daemon: &DaemonConfig, now: i64) -> schedule::Decision {
    let mut f = facts(st);
    for_config(&mut f, cert, st);
    next_from(&f, cert, daemon, now)
}

/// What the configuration adds to a certificate's facts: whether it changed since the installed
/// certificate was issued, and whether the operator gave a consent that was waited for (then the
/// wait's backoff no longer holds the certificate back).
pub fn for_config(f: &mut schedule::Facts, cert: &CertConfig, st: &CertState) {
    f.changed = changed(cert, st).is_some();
    if consent_given(cert, st) {
        f.failures = 0;
        f.retry_after = None;
    }
}

/// The settings a paid step (or a choice of order) is allowed or refused under. A consent that
/// waits was refused under the settings it records; once they differ, it is asked again at once.
pub fn consent_settings(cert: &CertConfig) -> String {
    format!(
        "new_orders={} renew_term={} max_paid_orders={} certificate_id={:?} product={} months={} names={}",
        cert.new_orders,
        cert.renew_term,
        cert.max_paid_orders,
        cert.certificate_id,
        cert.product,
        cert.lifetime_months,
        cert.all_names().join(",")
    )
}

/// Whether a consent waits and the settings it was refused under have changed since.
pub fn consent_given(cert: &CertConfig, st: &CertState) -> bool {
    st.consent
        .as_ref()
        .is_some_and(|c| c.settings != consent_settings(cert))
}

/// Something the configuration does not allow, so nothing was bought: a new order where
/// `new_orders = "deny"`, the next term without `renew_term`, a paid request over
/// `max_paid_orders`, or a choice between the account's orders. The certificate waits for the
/// operator (`status` says so, `on_failure` hears `consent_needed` once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsConsent {
    /// What waits, e.g. "a new 12-month order of QUICKSSLPREMIUM".
    pub what: String,
    /// Why it is not done and how the operator allows it.
    pub give: String,
}

impl std::fmt::Display for NeedsConsent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "nothing was bought: {} waits for the operator: {}",
            self.what, self.give
        )
    }
}

impl std::error::Error for NeedsConsent {}

impl NeedsConsent {
    /// A create where `new_orders = "deny"`.
    pub fn new_order(cert: &CertConfig) -> Self {
        Self {
            what: format!("a new {}-month order of {}", cert.lifetime_months, cert.product),
            give: format!(
                "the account holds no running order for {}, and new_orders = \"deny\" forbids buying one: order it in the SSL Manager and set certificate_id = N, or set new_orders = \"allow\"",
                cert.name
            ),
        }
    }

    /// The next term, where `renew_term` is off.
    pub fn next_term(cert: &CertConfig) -> Self {
        Self {
            what: format!("the next {}-month term of {}", cert.lifetime_months, cert.product),
            give: format!(
                "the order term of {} has ended (or ends before a reissue could help); set renew_term = true to buy the next term (paid), or renew it in the SSL Manager",
                cert.name
            ),
        }
    }

    /// A paid request the spend guard refuses.
    pub fn spend_guard(cert: &CertConfig, kind: OrderKind, spent: usize) -> Self {
        Self {
            what: format!("another paid {} request", kind.name()),
            give: format!(
                "spend guard: {spent} paid {} request(s) for {} in this term already; raise max_paid_orders (now {}) to allow another",
                kind.name(),
                cert.name,
                cert.max_paid_orders
            ),
        }
    }

    /// Several of the account's orders could be meant, or none fits exactly.
    pub fn choice(why: String) -> Self {
        Self {
            what: "a choice of which of the account's orders to use".into(),
            give: why,
        }
    }
}

/// [`next`] from facts the caller adjusted (the daemon knows failures its state file may not).
pub fn next_from(facts: &schedule::Facts, cert: &CertConfig, daemon: &DaemonConfig, now: i64) -> schedule::Decision {
    schedule::next(
        now,
        facts,
        &policy_for(cert, daemon),
        schedule::jitter_seed(super::host_name(), &cert.name),
    )
}

/// What to do now for one certificate, if anything (`force`: reissue now, whatever the schedule).
pub fn decide(
    st: &CertState,
    cert: &CertConfig,
    daemon: &DaemonConfig,
    now: i64,
    force: bool,
) -> anyhow::Result<Option<OrderKind>> {
    let mut f = facts(st);
    for_config(&mut f, cert, st);
    if force {
        f.failures = 0;
        f.retry_after = None;
    }
    let d = next_from(&f, cert, daemon, now);
    let kind = match d.action {
        schedule::Action::Create => OrderKind::Create,
        schedule::Action::Renew => OrderKind::Renew,
        schedule::Action::Reissue | schedule::Action::Resume => OrderKind::Reissue,
        schedule::Action::TermEnded if force && st.term_end.is_some_and(|t| now < t) => OrderKind::Reissue,
        // The term has not ended yet, but no reissue could outlive the installed certificate:
        // nothing to do until it ends (the term warning says so ahead).
        schedule::Action::TermEnded if d.at > now => return Ok(None),
        schedule::Action::TermEnded => return Err(NeedsConsent::next_term(cert).into()),
    };
    if force || d.at <= now { Ok(Some(kind)) } else { Ok(None) }
}

/// The moves an order may make, from one step to the next. An order starts at `planned` and may
/// end at any step (see [`Ending`]); the one step back is a request that never arrived, which is
/// prepared to be sent again.
pub const TRANSITIONS: [(Step, Step); 11] = [
    (Step::Planned, Step::Keyed),
    (Step::Keyed, Step::Prepared),
    (Step::Prepared, Step::DnsPublished),
    (Step::DnsPublished, Step::DnsVerified),
    // The records were not served in time: they are removed, and published again next time.
    (Step::DnsPublished, Step::Prepared),
    (Step::DnsVerified, Step::Sending),
    (Step::Sending, Step::Accepted),
    (Step::Sending, Step::DnsVerified),
    (Step::Accepted, Step::JobDone),
    (Step::JobDone, Step::Downloaded),
    (Step::Downloaded, Step::Installed),
];

/// Whether an order at `from` may move to `to`.
pub fn allowed(from: Step, to: Step) -> bool {
    TRANSITIONS.contains(&(from, to))
}

/// Whether the journal must be on disk when an order reaches `step`. It must before a DNS hook
/// runs and after it ran (hook mode), before a request that may cost money leaves, once the API
/// holds a job of ours, and before that job's poll message is confirmed. The steps in between (a
/// key in memory, prepareOrder, a DNS check, the download) are free to redo, so a crash there
/// resumes from the last step written.
///
/// `installed` is not written apart: the deploy that follows at once writes the state (the new
/// generation live or pending), and a crash before that resumes from `job_done`, whose download,
/// verification and new generation are free and safe to repeat (the generation the crash left
/// behind is never live unless complete, and is pruned like any old one). A journal an older
/// certkeeper wrote at `installed` still resumes from there.
pub fn persists(step: Step, dns: DnsMode) -> bool {
    match step {
        Step::Planned | Step::Keyed | Step::DnsVerified | Step::Downloaded | Step::Installed => false,
        Step::Prepared | Step::DnsPublished => dns == DnsMode::Hook,
        Step::Sending | Step::Accepted | Step::JobDone => true,
    }
}

/// Whether the move from `from` to `to` writes the journal: where [`persists`] says so, and
/// always on a step back, so that the disk never holds a step the order has left behind.
pub fn writes(from: Step, to: Step, dns: DnsMode) -> bool {
    persists(to, dns) || to < from
}

/// How an order ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The new generation is written; the deploy follows.
    Installed,
    /// The delivered certificate failed its verification.
    DeliveryRefused,
    /// The API refused the request: it provably cost nothing.
    RequestRefused,
    /// The job ended FAILED or CANCELED.
    JobFailed,
    /// The spend guard refused another paid request in this term.
    SpendGuard,
}

impl Ending {
    pub const ALL: [Ending; 5] = [
        Ending::Installed,
        Ending::DeliveryRefused,
        Ending::RequestRefused,
        Ending::JobFailed,
        Ending::SpendGuard,
    ];

    /// Whether the validation records the DNS hook published are removed: after every ending,
    /// so that no record outlives its order (a new ending must say so here too).
    pub fn cleans_up(self) -> bool {
        match self {
            Ending::Installed
            | Ending::DeliveryRefused
            | Ending::RequestRefused
            | Ending::JobFailed
            | Ending::SpendGuard => true,
        }
    }

    /// Whether the state is written as the order ends. After `installed` the deploy writes it;
    /// a crash before that resumes from `installed`, whose cleanup and switch are safe to repeat.
    pub fn writes(self) -> bool {
        self != Ending::Installed
    }
}

/// Whether an order ending at `step` runs the DNS hook's `cleanup`: in hook mode, when the
/// ending calls for it and the hook may have published something (from `prepared` on).
pub fn dns_cleanup(ending: Ending, step: Step, dns: DnsMode) -> bool {
    ending.cleans_up() && dns == DnsMode::Hook && step >= Step::Prepared
}

/// Which term a request of `kind` pays for: 0 for the first order, else the end (unix time) of
/// the term renewed.
pub fn term_of(kind: OrderKind, st: &CertState) -> i64 {
    if kind == OrderKind::Renew {
        st.term_end.unwrap_or(0)
    } else {
        0
    }
}

/// Paid requests of `kind` for `term` that were accepted or may have been (answer lost).
pub fn paid_in_term(st: &CertState, kind: OrderKind, term: i64) -> usize {
    st.paid
        .iter()
        .filter(|p| p.kind == kind && p.term == term && p.status != PaidStatus::NotMade)
        .count()
}

/// The spend guard: `Some(spent)` when another request of `kind` would exceed `max` paid
/// requests in its term; a free reissue always passes.
pub fn spend_guard(st: &CertState, kind: OrderKind, max: u32) -> Option<usize> {
    if !kind.is_paid() {
        return None;
    }
    let spent = paid_in_term(st, kind, term_of(kind, st));
    (spent >= max as usize).then_some(spent)
}

#[cfg(test)]
mod tests;
