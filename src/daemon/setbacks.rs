//! What the daemon remembers of each certificate's failures besides its state file: the backoff
//! it keeps when the file cannot be written, what `on_failure` was last told, and which
//! certificates a configuration change forgave.

use std::collections::HashMap;

use crate::order;
use crate::schedule;

/// What the daemon remembers of each certificate's failures, besides its state file: the count
/// and time of the last one, so that a certificate whose state cannot be written still backs off,
/// and the state last reported to `on_failure`, so that a failure that repeats is reported once.
#[derive(Default)]
pub(super) struct Setbacks {
    failures: HashMap<String, (u32, i64)>,
    reported: HashMap<String, String>,
    /// Certificates whose configuration changed since they failed, and when: their next
    /// attempt starts the backoff anew.
    forgiven: HashMap<String, i64>,
}

impl Setbacks {
    /// The schedule's facts: the state file's, with the failures remembered here where the file
    /// knows fewer.
    pub(super) fn facts(&self, name: &str, st: &crate::store::CertState) -> schedule::Facts {
        let mut f = order::facts(st);
        if let Some((count, at)) = self.failures.get(name)
            && f.last_failure.is_none_or(|l| l < *at)
        {
            f.failures = f.failures.max(*count);
            f.last_failure = Some(*at);
        }
        if self.is_forgiven(name, st) {
            f.failures = 0;
            f.retry_after = None;
        }
        f
    }

    /// The configuration of `name` changed: its past failures no longer hold it back.
    pub(super) fn forgive(&mut self, name: &str, at: i64) {
        self.failures.remove(name);
        self.forgiven.insert(name.to_string(), at);
    }

    /// Whether `name` was forgiven and has not failed since.
    pub(super) fn is_forgiven(&self, name: &str, st: &crate::store::CertState) -> bool {
        self.forgiven.get(name).is_some_and(|at| {
            st.last_failure.is_none_or(|l| l <= *at) && self.failures.get(name).is_none_or(|(_, f)| f <= at)
        })
    }

    /// Records a failure; returns whether `on_failure` should hear of it (the first time this
    /// state is reached).
    pub(super) fn record(&mut self, name: &str, st: &crate::store::CertState, at: i64, state: String) -> bool {
        let count = self.failures.get(name).map_or(0, |(c, _)| *c) + 1;
        self.failures.insert(name.to_string(), (count.max(st.failures), at));
        self.reported.insert(name.to_string(), state.clone()).as_ref() != Some(&state)
    }

    /// The failures in a row remembered for `name` (at least the state file's).
    pub(super) fn count(&self, name: &str) -> u32 {
        self.failures.get(name).map_or(0, |(c, _)| *c)
    }

    pub(super) fn clear(&mut self, name: &str) {
        self.failures.remove(name);
        self.reported.remove(name);
        self.forgiven.remove(name);
    }
}
