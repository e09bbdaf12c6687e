//! When the daemon next checks what the servers hand out, per certificate with a
//! `serve_check`: at the daemon's start, then every `serve_check_interval` after each check (a
//! deploy checks, too). Earliest first, by a sorted set, so that a turn of the daemon's loop
//! never scans every certificate.

use std::collections::{BTreeSet, HashMap};

use crate::config::CertConfig;

#[derive(Default)]
pub(super) struct ServeChecks {
    queue: BTreeSet<(i64, String)>,
    at: HashMap<String, i64>,
    /// Due while an order of theirs was in flight: checked once it ends.
    after_task: std::collections::HashSet<String>,
}

impl ServeChecks {
    /// Every certificate of `certs` with a `serve_check`: at the time `old` had for it, else
    /// at `t`.
    pub(super) fn new(certs: &[CertConfig], old: Option<&Self>, t: i64) -> Self {
        let mut checks = Self::default();
        for c in certs.iter().filter(|c| !c.serve_check.is_empty()) {
            let at = old.and_then(|o| o.at.get(&c.name).copied()).unwrap_or(t);
            checks.set(&c.name, at);
        }
        checks
    }

    fn set(&mut self, name: &str, at: i64) {
        if let Some(old) = self.at.insert(name.to_string(), at) {
            self.queue.remove(&(old, name.to_string()));
        }
        self.queue.insert((at, name.to_string()));
    }

    /// Takes out up to `room` certificates whose check is due at `t`, earliest first; each is
    /// back once [`Self::checked`] says so.
    pub(super) fn due(&mut self, t: i64, room: usize, busy: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        while out.len() < room {
            let Some((at, name)) = self.queue.pop_first() else {
                break;
            };
            if at > t {
                self.queue.insert((at, name));
                break;
            }
            self.at.remove(&name);
            if busy(&name) {
                self.after_task.insert(name);
            } else {
                out.push(name);
            }
        }
        out
    }

    /// A task of `name` ended at `t`: a check that fell due meanwhile is due now.
    pub(super) fn task_ended(&mut self, name: &str, t: i64) {
        if self.after_task.remove(name) {
            self.set(name, t);
        }
    }

    /// `name` was checked (by a check or a deploy) at `t`: next at `t` + its interval.
    pub(super) fn checked(&mut self, cert: &CertConfig, t: i64) {
        self.after_task.remove(&cert.name);
        if !cert.serve_check.is_empty() {
            self.set(&cert.name, t + cert.serve_check_interval.as_secs().max(1) as i64);
        }
    }

    /// When the next check is due.
    pub(super) fn next(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }
}
