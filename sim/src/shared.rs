//! What the HTTP handlers and the job runner share: the simulated service's state behind its
//! lock, the test CA, the DNS zones, the durations, the accounts and the rate limits per client
//! IP address.
//!
//! It sits below both users so that the job runner does not depend on the HTTP layer.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// The rate limit's token buckets, one per client IP address.
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

/// A token bucket per client IP address (the help page "JSON API Basics": "Only 3 requests per
/// second and IP"): `rate` tokens a second, as many (at least one) in a burst.
#[derive(Default)]
pub struct RateLimits {
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl RateLimits {
    /// The bucket of `ip`, refilled up to now.
    fn refilled(buckets: &mut HashMap<IpAddr, Bucket>, ip: IpAddr, rate: f64) -> &mut Bucket {
        let now = Instant::now();
        let burst = rate.max(1.0);
        let b = buckets.entry(ip).or_insert(Bucket { tokens: burst, at: now });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        b
    }

    /// Takes a token from `ip`'s bucket, which refills at `rate` tokens a second. When the
    /// bucket is empty, answers the seconds until the next token instead.
    pub fn take(&self, ip: IpAddr, rate: f64) -> Option<u64> {
        let mut buckets = self.buckets();
        let b = Self::refilled(&mut buckets, ip, rate);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(((1.0 - b.tokens) / rate).ceil().max(1.0) as u64)
        }
    }

    /// Takes a token from `ip`'s bucket even when it is empty (the bucket goes into debt), and
    /// answers how long the request must wait for it: requests held this way are served at
    /// `rate` a second, in order.
    pub fn reserve(&self, ip: IpAddr, rate: f64) -> Duration {
        let mut buckets = self.buckets();
        let b = Self::refilled(&mut buckets, ip, rate);
        b.tokens -= 1.0;
        if b.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-b.tokens / rate)
        }
    }

    /// Refills every bucket (the management API's reset).
    pub fn clear(&self) {
        self.buckets().clear();
    }

    fn buckets(&self) -> MutexGuard<'_, HashMap<IpAddr, Bucket>> {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner())
    }
}
