//! What the HTTP handlers and the job runner share: the simulated service's state behind its
//! lock, the test CA, the DNS zones, the durations, the accounts and the per-account rate limits.
//!
//! It sits below both users so that the job runner does not depend on the HTTP layer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::Notify;

use crate::ca::TestCa;
use crate::config::{Account, Durations};
use crate::dns::ZoneStore;
use crate::state::{Env, State};

/// Everything the handlers and the job runner share.
pub struct Shared {
    pub state: Mutex<State>,
    pub ca: TestCa,
    pub zones: Arc<ZoneStore>,
    pub durations: Durations,
    pub accounts: Vec<Account>,
    /// Woken when a job starts, so the job runner looks at once.
    pub wake: Notify,
    /// The rate limit's token buckets, one per account.
    pub rate_limits: RateLimits,
}

impl Shared {
    pub fn new(state: State, ca: TestCa, zones: Arc<ZoneStore>, durations: Durations, accounts: Vec<Account>) -> Self {
        Self {
            state: Mutex::new(state),
            ca,
            zones,
            durations,
            accounts,
            wake: Notify::new(),
            rate_limits: RateLimits::default(),
        }
    }

    /// The service's state; a handler that panicked holding it does not lock everyone out.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The zones and durations, as orders and jobs take them.
    pub fn env(&self) -> Env<'_> {
        Env {
            zones: &self.zones,
            durations: &self.durations,
        }
    }
}

/// A token bucket per account: `rate` tokens a second, as many (at least one) in a burst.
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// Takes a token from `account`'s bucket, which refills at `rate` tokens a second. When the
    /// bucket is empty, answers the seconds until the next token instead.
    pub fn take(&self, account: String, rate: f64) -> Option<u64> {
        let mut buckets = self.buckets();
        let now = Instant::now();
        let b = buckets.entry(account).or_insert(Bucket {
            tokens: rate.max(1.0),
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate.max(1.0));
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Refills every bucket (the management API's reset).
    pub fn clear(&self) {
        self.buckets().clear();
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<String, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}
