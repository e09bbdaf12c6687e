//! When the daemon looks at each certificate again. A certificate that is not due is not looked
//! at (its state file not read) until the earliest moment its decision could change: when it
//! falls due, when less than 1/20 of its validity is left (the expiry alarm), when its term's
//! warning starts or its term ends, and at least every [`RECHECK`]. Its order ending, a
//! re-read configuration and a reissue asked for bring it back at once. The daemon holds the
//! state directory's lock, so nothing else changes a state file meanwhile.

use std::collections::{BTreeSet, HashMap};

use crate::config::{CertConfig, DaemonConfig};
use crate::schedule::Decision;
use crate::store::CertState;

/// The longest a certificate goes without being looked at.
pub(super) const RECHECK: i64 = 6 * 3600;

/// The certificates of one configuration, by their index in it, each with the time it is next
/// looked at.
pub(super) struct Agenda {
    queue: BTreeSet<(i64, usize)>,
    at: Vec<i64>,
    index: HashMap<String, usize>,
}

impl Agenda {
    /// Every certificate of `certs`, each to be looked at now.
    pub(super) fn new(certs: &[CertConfig]) -> Self {
        Self::of(certs.iter().map(|c| c.name.as_str()))
    }

    fn of<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> Self {
        let n = names.len();
        Self {
            queue: (0..n).map(|i| (i64::MIN, i)).collect(),
            at: vec![i64::MIN; n],
            index: names.enumerate().map(|(i, name)| (name.to_string(), i)).collect(),
        }
    }

    /// Takes out the certificates whose time has come (at `t` or before), earliest first.
    pub(super) fn due(&mut self, t: i64) -> Vec<usize> {
        let mut out = Vec::new();
        while let Some(&(at, i)) = self.queue.first() {
            if at > t {
                break;
            }
            self.queue.pop_first();
            out.push(i);
        }
        out
    }

    /// Looks at certificate `i` again at `at`.
    pub(super) fn later(&mut self, i: usize, at: i64) {
        if let Some(old) = self.at.get(i).copied() {
            self.queue.remove(&(old, i));
            self.at[i] = at;
            self.queue.insert((at, i));
        }
    }

    /// Looks at the certificate named `name` at the next turn of the loop.
    pub(super) fn now(&mut self, name: &str) {
        if let Some(&i) = self.index.get(name) {
            self.later(i, i64::MIN);
        }
    }

    /// When the next certificate is to be looked at.
    pub(super) fn next(&self) -> Option<i64> {
        self.queue.first().map(|(at, _)| *at)
    }
}

/// The earliest moment the decision `d` about a certificate not due at `t` could change.
pub(super) fn look_again(d: &Decision, st: &CertState, daemon: &DaemonConfig, t: i64) -> i64 {
    let mut at = t + RECHECK;
    let mut upcoming = |moment: i64| {
        if moment > t {
            at = at.min(moment);
        }
    };
    upcoming(d.at);
    if let (Some(nb), Some(na)) = (st.not_before, st.not_after)
        && na > nb
    {
        // The expiry alarm: less than 1/20 of the validity left.
        upcoming(na - (na - nb) / 20);
        upcoming(na);
    }
    if let Some(end) = st.term_end {
        upcoming(end - daemon.term_warning.as_secs() as i64);
        upcoming(end);
    }
    at.max(t + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Action;

    fn daemon() -> DaemonConfig {
        DaemonConfig {
            retry_backoff: crate::schedule::default_backoff(),
            term_warning: std::time::Duration::from_secs(30 * 86_400),
            jitter: 0.0,
            metrics_listen: None,
            on_failure: vec![],
        }
    }

    #[test]
    fn certificates_come_back_when_their_time_comes_and_when_asked_for() {
        let mut agenda = Agenda::of(["a", "b", "c"].into_iter());
        assert_eq!(agenda.due(100), [0, 1, 2], "everything is looked at first");
        assert!(agenda.due(100).is_empty());
        agenda.later(0, 500);
        agenda.later(1, 300);
        agenda.later(2, 10_000);
        assert_eq!(agenda.next(), Some(300));
        assert!(agenda.due(299).is_empty());
        assert_eq!(agenda.due(500), [1, 0]);
        agenda.now("c");
        assert_eq!(agenda.due(501), [2]);
        agenda.now("unknown");
        assert_eq!(agenda.next(), None);
    }

    #[test]
    fn a_certificate_is_looked_at_again_before_any_alarm_or_term_event_and_within_six_hours() {
        let daemon = daemon();
        let t = 1_800_000_000;
        let d = Decision {
            action: Action::Reissue,
            at: t + 90 * 86_400,
            urgent: false,
            term_warning: false,
        };
        let quiet = CertState::default();
        assert_eq!(look_again(&d, &quiet, &daemon, t), t + RECHECK);
        // A 100-day certificate issued 94.5 days ago: its alarm (5 days before the end) is
        // half a day away.
        let st = CertState {
            not_before: Some(t - 94 * 86_400 - 43_200),
            not_after: Some(t + 5 * 86_400 + 43_200),
            ..CertState::default()
        };
        let mut d_soon = d;
        d_soon.at = t + 3600;
        assert_eq!(look_again(&d_soon, &st, &daemon, t), t + 3600);
        assert_eq!(look_again(&d, &st, &daemon, t), t + RECHECK);
        // The same certificate an hour before its alarm.
        let alarm = CertState {
            not_before: Some(t - 95 * 86_400 + 3600),
            not_after: Some(t + 5 * 86_400 + 3600),
            ..CertState::default()
        };
        assert_eq!(look_again(&d, &alarm, &daemon, t), t + 3600);
        // The term's warning starts in an hour.
        let term = CertState {
            term_end: Some(t + daemon.term_warning.as_secs() as i64 + 3600),
            ..CertState::default()
        };
        assert_eq!(look_again(&d, &term, &daemon, t), t + 3600);
        // Never in the past: a decision due now is looked at after it ran.
        let mut now = d;
        now.at = t - 10;
        assert_eq!(look_again(&now, &quiet, &daemon, t), t + RECHECK);
    }
}
