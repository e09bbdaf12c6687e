//! When each certificate needs what: a pure function of the time, the certificate's facts and
//! the policy. It does no I/O and never reads the clock, so it is correct at any time scale
//! (seconds in tests, months in production) and is tested on its own.

use std::time::Duration;

/// What certkeeper should do for one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Buy the first order.
    Create,
    /// Resume the order in flight, or retry a failed deploy.
    Resume,
    /// A new certificate within the term (free).
    Reissue,
    /// Buy the next term.
    Renew,
    /// Nothing can be done: the term has ended and renewing is not allowed.
    TermEnded,
}

/// The decision: what, and from when (unix seconds, may be in the past).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub at: i64,
    /// Under 1/20 of the validity is left (or the certificate has expired): goes first, alarms.
    pub urgent: bool,
    /// The term ends within the warning period and renewing it is not allowed.
    pub term_warning: bool,
}

/// What is known about one certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub has_order: bool,
    pub in_flight: bool,
    pub not_before: Option<i64>,
    pub not_after: Option<i64>,
    pub term_end: Option<i64>,
    /// Consecutive failed attempts, and when the last one ended.
    pub failures: u32,
    pub last_failure: Option<i64>,
    /// The API's Retry-After, as an absolute time.
    pub retry_after: Option<i64>,
    /// The configuration changed since the installed certificate was issued (names, key).
    pub changed: bool,
}

/// When to reissue: when this share of the validity is left, or this long before expiry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RenewBefore {
    Share(f64),
    Before(Duration),
}

/// The policy for one certificate.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    pub renew_before: RenewBefore,
    pub renew_term: bool,
    /// Warn this long before the term ends when `renew_term` is off.
    pub term_warning: Duration,
    /// Pauses after the 1st, 2nd, ... failure; the last one repeats.
    pub backoff: Vec<Duration>,
    /// The largest share of the validity the jitter may move a reissue earlier.
    pub jitter_share: f64,
}

/// By default a certificate is reissued when a third of its validity is left.
pub(crate) const DEFAULT_RENEW_BEFORE: RenewBefore = RenewBefore::Share(1.0 / 3.0);

/// By default an order term is not renewed (bought again) on its own: that costs money.
pub(crate) const DEFAULT_RENEW_TERM: bool = false;

/// By default the warning comes 30 days before an order term ends.
pub(crate) const DEFAULT_TERM_WARNING: Duration = Duration::from_secs(30 * 86_400);

/// By default a reissue moves earlier by at most 5% of the validity.
pub(crate) const DEFAULT_JITTER_SHARE: f64 = 0.05;

/// The default pauses after failures: 1 min, 10 min, 100 min, then every 6 h.
pub(crate) const DEFAULT_BACKOFF: [Duration; 4] = [
    Duration::from_secs(60),
    Duration::from_secs(600),
    Duration::from_secs(6000),
    Duration::from_secs(21_600),
];

impl Default for Policy {
    fn default() -> Self {
        Self {
            renew_before: DEFAULT_RENEW_BEFORE,
            renew_term: DEFAULT_RENEW_TERM,
            term_warning: DEFAULT_TERM_WARNING,
            backoff: default_backoff(),
            jitter_share: DEFAULT_JITTER_SHARE,
        }
    }
}

/// [`DEFAULT_BACKOFF`] as the list a [`Policy`] holds.
pub(crate) fn default_backoff() -> Vec<Duration> {
    DEFAULT_BACKOFF.to_vec()
}

/// A stable number from the host and certificate names, which spreads a fleet's requests.
pub(crate) fn jitter_seed(host: &str, name: &str) -> u64 {
    // FNV-1a: stable across builds and platforms, unlike the standard hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The pause after `failures` consecutive failures (0: none).
pub(crate) fn backoff(policy: &Policy, failures: u32) -> Duration {
    if failures == 0 || policy.backoff.is_empty() {
        return Duration::ZERO;
    }
    let i = (failures as usize - 1).min(policy.backoff.len() - 1);
    policy.backoff[i]
}

/// Decides what to do for a certificate and from when.
pub(crate) fn next(now: i64, f: &Facts, p: &Policy, seed: u64) -> Decision {
    let lifetime = match (f.not_before, f.not_after) {
        (Some(nb), Some(na)) if na > nb => na - nb,
        _ => 0,
    };
    let remaining = f.not_after.map(|na| na - now);
    let urgent = lifetime > 0 && remaining.is_some_and(|r| r * 20 < lifetime);
    // Failed attempts wait out their backoff (shortened when close to expiry, so that retries
    // keep pace with the certificate's own time scale) and any Retry-After.
    let mut pause = backoff(p, f.failures).as_secs() as i64;
    if lifetime > 0 {
        pause = pause.min((remaining.unwrap_or(0) / 4).max(lifetime / 100).max(1));
    }
    let earliest = f
        .last_failure
        .map(|t| t + pause)
        .unwrap_or(i64::MIN)
        .max(f.retry_after.unwrap_or(i64::MIN));
    let decision = |action, at: i64| Decision {
        action,
        at: at.max(earliest),
        urgent,
        term_warning: false,
    };

    if f.in_flight {
        return decision(Action::Resume, now);
    }
    if !f.has_order {
        return decision(Action::Create, now);
    }
    let Some(not_after) = f.not_after else {
        // Ordered but never issued (e.g. a failed job): reissue within the term, for free.
        return decision(Action::Reissue, now);
    };
    let threshold = match p.renew_before {
        RenewBefore::Share(s) => (lifetime as f64 * s) as i64,
        RenewBefore::Before(d) => d.as_secs() as i64,
    };
    let spread = (lifetime as f64 * p.jitter_share).min(threshold as f64 / 2.0) as u64;
    let jitter = if spread == 0 { 0 } else { (seed % (spread + 1)) as i64 };
    // A certificate for names or a key no longer configured is due for a reissue at once.
    let reissue_at = if f.changed { now } else { not_after - threshold - jitter };
    match f.term_end {
        Some(term_end) if p.renew_term => {
            // Renew once a reissue would no longer outlive the term by the renewal threshold.
            let renew_at = term_end - threshold - jitter;
            if renew_at <= reissue_at || now >= term_end {
                decision(Action::Renew, renew_at.min(reissue_at))
            } else {
                decision(Action::Reissue, reissue_at)
            }
        }
        Some(term_end) if now >= term_end => Decision {
            action: Action::TermEnded,
            at: now,
            urgent,
            term_warning: true,
        },
        Some(term_end) => {
            let mut d = decision(Action::Reissue, reissue_at);
            d.term_warning = now + p.term_warning.as_secs() as i64 >= term_end;
            // Nothing left to reissue into: the term ends first, or a new certificate (which the
            // CA ends with the term at the latest) would not outlive the one installed. A
            // changed configuration still gets its reissue while the term lasts.
            if reissue_at >= term_end || (term_end <= not_after && !f.changed) {
                d = Decision {
                    action: Action::TermEnded,
                    at: term_end,
                    urgent,
                    term_warning: true,
                };
            }
            d
        }
        None => decision(Action::Reissue, reissue_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    /// A 90-day certificate issued `age` days ago, in a term ending in `term` days.
    fn facts(age: i64, term: i64) -> Facts {
        Facts {
            has_order: true,
            not_before: Some(NOW - age * DAY),
            not_after: Some(NOW - age * DAY + 90 * DAY),
            term_end: Some(NOW + term * DAY),
            ..Facts::default()
        }
    }

    fn no_jitter() -> Policy {
        Policy {
            jitter_share: 0.0,
            ..Policy::default()
        }
    }

    #[test]
    fn far_from_expiry_the_reissue_is_planned_at_two_thirds_of_the_validity() {
        let d = next(NOW, &facts(10, 300), &no_jitter(), 0);
        assert_eq!(d.action, Action::Reissue);
        assert_eq!(d.at, NOW - 10 * DAY + 60 * DAY);
        assert!(!d.urgent && !d.term_warning);
    }

    #[test]
    fn inside_the_window_it_is_due_now_and_past_expiry_it_is_urgent() {
        let d = next(NOW, &facts(70, 300), &no_jitter(), 0);
        assert!(d.at <= NOW && d.action == Action::Reissue && !d.urgent);
        let d = next(NOW, &facts(87, 300), &no_jitter(), 0);
        assert!(d.urgent, "3 of 90 days left is under 1/20");
        let d = next(NOW, &facts(95, 300), &no_jitter(), 0);
        assert!(d.at <= NOW && d.urgent);
    }

    #[test]
    fn a_duration_threshold_works_like_a_share() {
        let p = Policy {
            renew_before: RenewBefore::Before(Duration::from_secs(10 * DAY as u64)),
            ..no_jitter()
        };
        assert_eq!(next(NOW, &facts(0, 300), &p, 0).at, NOW + 80 * DAY);
    }

    #[test]
    fn a_term_ending_before_the_certificate_is_renewed_when_allowed() {
        // The certificate ends at day 80; the term ends at day 20: renew 30 days (a third of
        // the validity) before the term's end, which is now.
        let allowed = Policy {
            renew_term: true,
            ..no_jitter()
        };
        let d = next(NOW, &facts(10, 20), &allowed, 0);
        assert_eq!((d.action, d.at), (Action::Renew, NOW + 20 * DAY - 30 * DAY));
        let d = next(NOW, &facts(10, -1), &allowed, 0);
        assert_eq!(d.action, Action::Renew);
        // Far from the term's end, a reissue comes first.
        assert_eq!(next(NOW, &facts(10, 300), &allowed, 0).action, Action::Reissue);
    }

    #[test]
    fn with_term_renewal_off_it_warns_ahead_and_stops_at_the_end() {
        let d = next(NOW, &facts(70, 25), &no_jitter(), 0);
        assert_eq!(d.action, Action::Reissue);
        assert!(
            d.term_warning,
            "25 days before the term's end is inside the 30-day warning"
        );
        let d = next(NOW, &facts(10, -1), &no_jitter(), 0);
        assert_eq!(d.action, Action::TermEnded);
        // A certificate that already reaches the term's end has nothing left to reissue into.
        let d = next(NOW, &facts(10, 5), &no_jitter(), 0);
        assert_eq!(d.action, Action::TermEnded);
    }

    #[test]
    fn new_orders_and_orders_in_flight_are_due_at_once() {
        assert_eq!(
            next(NOW, &Facts::default(), &no_jitter(), 0),
            Decision {
                action: Action::Create,
                at: NOW,
                urgent: false,
                term_warning: false
            }
        );
        let f = Facts {
            in_flight: true,
            ..facts(10, 300)
        };
        assert_eq!(next(NOW, &f, &no_jitter(), 0).action, Action::Resume);
        let f = Facts {
            has_order: true,
            ..Facts::default()
        };
        assert_eq!(next(NOW, &f, &no_jitter(), 0).action, Action::Reissue);
    }

    #[test]
    fn jitter_is_stable_per_host_and_name_and_bounded() {
        let a = jitter_seed("web1", "www.example.com");
        assert_eq!(a, jitter_seed("web1", "www.example.com"));
        assert_ne!(a, jitter_seed("web2", "www.example.com"));
        assert_ne!(a, jitter_seed("web1", "shop.example.com"));
        let p = Policy::default();
        let base = next(NOW, &facts(0, 300), &no_jitter(), 0).at;
        let mut seen = std::collections::BTreeSet::new();
        for host in 0..50 {
            let at = next(
                NOW,
                &facts(0, 300),
                &p,
                jitter_seed(&format!("web{host}"), "www.example.com"),
            )
            .at;
            assert!(at <= base && base - at <= (90 * DAY) / 20, "{at} vs {base}");
            seen.insert(at);
        }
        assert!(
            seen.len() > 40,
            "the jitter spreads a fleet: {} distinct times",
            seen.len()
        );
    }

    #[test]
    fn backoff_steps_through_1m_10m_100m_then_every_6h() {
        let p = Policy::default();
        let steps: Vec<u64> = (0..7).map(|n| backoff(&p, n).as_secs()).collect();
        assert_eq!(steps, [0, 60, 600, 6000, 21_600, 21_600, 21_600]);
        // A failed attempt waits its backoff; close to expiry the pause shrinks with the time left.
        let f = Facts {
            failures: 3,
            last_failure: Some(NOW),
            ..facts(70, 300)
        };
        assert_eq!(next(NOW, &f, &no_jitter(), 0).at, NOW + 6000);
        let f = Facts {
            failures: 4,
            last_failure: Some(NOW),
            ..facts(89, 300)
        };
        let at = next(NOW, &f, &no_jitter(), 0).at;
        assert!(
            at < NOW + DAY / 3,
            "one day left: retry within a quarter of it, not in 6 h ({})",
            at - NOW
        );
    }

    #[test]
    fn retry_after_is_honoured() {
        let f = Facts {
            retry_after: Some(NOW + 120),
            ..Facts::default()
        };
        assert_eq!(next(NOW, &f, &no_jitter(), 0).at, NOW + 120);
    }

    #[test]
    fn the_same_rules_hold_at_a_compressed_time_scale() {
        // A 30-second certificate in a 120-second term: the same shape, in seconds.
        let f = Facts {
            has_order: true,
            not_before: Some(NOW - 5),
            not_after: Some(NOW + 25),
            term_end: Some(NOW + 100),
            ..Facts::default()
        };
        let d = next(NOW, &f, &Policy::default(), jitter_seed("h", "n"));
        assert_eq!(d.action, Action::Reissue);
        assert!((NOW + 14..=NOW + 15).contains(&d.at), "{}", d.at - NOW);
        let f = Facts {
            failures: 2,
            last_failure: Some(NOW),
            ..f
        };
        let d = next(NOW, &f, &Policy::default(), 0);
        assert!(
            d.at - NOW <= 15,
            "a 10-minute backoff would outlive a 30-second certificate: {}",
            d.at - NOW
        );
    }

    #[test]
    fn a_changed_certificate_is_reissued_at_once_but_not_past_its_term_or_backoff() {
        let p = no_jitter();
        let fresh = facts(1, 300);
        assert!(next(NOW, &fresh, &p, 0).at > NOW + 30 * DAY);
        let changed = Facts { changed: true, ..fresh };
        let d = next(NOW, &changed, &p, 0);
        assert_eq!((d.action, d.at), (Action::Reissue, NOW));
        // A failure still waits out its backoff.
        let failed = Facts {
            failures: 1,
            last_failure: Some(NOW),
            ..changed
        };
        assert_eq!(next(NOW, &failed, &p, 0).at, NOW + 60);
        // An ended term is still an ended term.
        let ended = Facts {
            term_end: Some(NOW - DAY),
            ..changed
        };
        assert_eq!(next(NOW, &ended, &p, 0).action, Action::TermEnded);
    }

    /// The CA ends a certificate with the order term at the latest. Once the installed one lasts
    /// to the term's end, a reissue gains nothing: it used to be reissued again and again (17
    /// times in the last term of a compressed run), the last one arriving already expired.
    #[test]
    fn no_reissue_that_would_not_outlive_the_installed_certificate() {
        let p = no_jitter();
        // Issued 60 days ago, capped at the term's end 30 days from now.
        let capped = Facts {
            has_order: true,
            not_before: Some(NOW - 60 * DAY),
            not_after: Some(NOW + 30 * DAY),
            term_end: Some(NOW + 30 * DAY),
            ..Facts::default()
        };
        let d = next(NOW, &capped, &p, 0);
        assert_eq!((d.action, d.at), (Action::TermEnded, NOW + 30 * DAY), "{d:?}");
        assert!(d.term_warning);
        // Where the term outlasts the certificate, the reissue is planned as usual.
        let room = Facts {
            term_end: Some(NOW + 300 * DAY),
            ..capped
        };
        assert_eq!(next(NOW, &room, &p, 0).action, Action::Reissue);
        // Renewing the term is still planned where allowed.
        let renewing = Policy {
            renew_term: true,
            ..no_jitter()
        };
        assert_eq!(next(NOW, &capped, &renewing, 0).action, Action::Renew);
    }
}
