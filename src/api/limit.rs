//! The API's rate limit, shared by every task of a process: requests spaced evenly, the
//! slots counted, and a slot taken ahead for a paid request (`Turn`).

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

/// Spaces requests so that no more than `rate` leave per second, across all tasks.
#[derive(Debug)]
pub struct RateLimiter {
    pub(super) interval: Duration,
    next: Mutex<Instant>,
    /// Requests let through so far.
    pub(super) sent: std::sync::atomic::AtomicU64,
}

impl RateLimiter {
    pub fn new(rate: f64) -> Self {
        Self {
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            next: Mutex::new(Instant::now()),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits for this request's slot.
    pub async fn acquire(&self) {
        self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let slot = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
    }

    /// Pushes every later slot back, after the API asked to slow down.
    pub async fn pause(&self, d: Duration) {
        let mut next = self.next.lock().await;
        *next = (*next).max(Instant::now() + d);
    }
}

/// A slot of the rate limit, taken by [`Client::turn`] for one paid request.
#[derive(Debug)]
pub struct Turn(pub(super) ());
