//! Every default of the configuration file, each written once: the value a setting takes when
//! the file leaves it out, and the value validation carries on with after reporting a bad one.
//!
//! The schedule's defaults (when to reissue, the term warning, the jitter, the backoff after
//! failures) belong to [`crate::schedule`] and are re-exported here, so that this file lists
//! them all.

use std::time::Duration;

use super::{DnsMode, KeyKind};

pub(super) use crate::schedule::{
    DEFAULT_JITTER_SHARE as JITTER, DEFAULT_RENEW_BEFORE as RENEW_BEFORE, DEFAULT_RENEW_TERM as RENEW_TERM,
    DEFAULT_TERM_WARNING as TERM_WARNING, default_backoff as retry_backoff,
};

// ----- [api] ------------------------------------------------------------------------------------

/// `api.timeout`: how long one request to the API may take.
pub(super) const API_TIMEOUT: Duration = Duration::from_secs(30);
/// `api.rate_limit`: requests per second at most, for all certificates together.
pub(super) const API_RATE_LIMIT: f64 = 3.0;

// ----- [store] ----------------------------------------------------------------------------------

/// `store.keep_generations`: the live generation and two before it.
pub(super) const KEEP_GENERATIONS: usize = 3;

// ----- [dns] ------------------------------------------------------------------------------------

/// The DNS port: `dns.nameserver_port`, and the port of a resolver listed without one.
pub(super) const DNS_PORT: u16 = 53;
/// `dns.propagation_timeout`: how long to wait for the DCV record to be visible everywhere.
pub(super) const PROPAGATION_TIMEOUT: Duration = Duration::from_secs(600);
/// `dns.check_interval`: the pause between two looks for the DCV record.
pub(super) const CHECK_INTERVAL: Duration = Duration::from_millis(250);

// ----- [order] ----------------------------------------------------------------------------------

/// `order.job_timeout`: how long to wait for a job before giving up for this run.
pub(super) const JOB_TIMEOUT: Duration = Duration::from_secs(3600);
/// `order.poll_interval`: the first pause between two looks at a running job.
pub(super) const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// `order.poll_interval_max`: the longest pause between two looks at a running job.
pub(super) const POLL_INTERVAL_MAX: Duration = Duration::from_secs(60);
/// `order.reconcile_grace`: how long after sending a paid request with a lost answer must be
/// searched for, and found nowhere, before it counts as never made. The searches find a request
/// the API received at once (its running and finished jobs, the certificates by name); the grace
/// covers a request still on its way, which no API call takes longer than the 30 s timeout to
/// answer: twenty times that.
pub(super) const RECONCILE_GRACE: Duration = Duration::from_secs(600);
/// `order.concurrency`: how many certificates are worked on at once.
pub(super) const CONCURRENCY: usize = 8;

// ----- [defaults] and [[certificate]] -----------------------------------------------------------

/// `product`: the AutoDNS product ordered.
pub(super) const PRODUCT: &str = "QUICKSSLPREMIUM";
/// `lifetime_months`: the order term.
pub(super) const LIFETIME_MONTHS: u32 = 12;
/// `software`: the server software the certificate is ordered for.
pub(super) const SOFTWARE: &str = "APACHESSL";
/// `key`: the type of new private keys.
pub(super) const KEY: KeyKind = KeyKind::EcdsaP256;
/// `dns`: who publishes the DCV record.
pub(super) const DNS_MODE: DnsMode = DnsMode::Autodns;
/// `max_paid_orders`: paid orders (create, renew) allowed per certificate and term.
pub(super) const MAX_PAID_ORDERS: u32 = 1;
/// `hook_timeout`: how long `dns_hook` and `reload` may run.
pub(super) const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// `serve_check_timeout`: how long every address has to hand out the new certificate (nginx
/// takes about 0.2 s to switch).
pub(super) const SERVE_CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// `serve_check_interval`: how often the daemon checks again what the servers hand out.
pub(super) const SERVE_CHECK_INTERVAL: Duration = Duration::from_secs(3600);

/// `new_orders`: a new (paid) order may be bought for a name the account holds no order for.
pub(super) const NEW_ORDERS: bool = true;
