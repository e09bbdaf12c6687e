//! The order's rules under test: what is due, and (below) the state machine.

use std::time::Duration;

use super::*;
use crate::config::{ContactSpec, DnsMode, KeyKind, RenewBefore};
use crate::store::PaidRequest;

fn daemon() -> DaemonConfig {
    DaemonConfig {
        retry_backoff: schedule::default_backoff(),
        term_warning: Duration::from_secs(30 * 86_400),
        jitter: 0.0,
        metrics_listen: None,
        on_failure: vec![],
    }
}

fn decide(st: &CertState, c: &CertConfig, now: i64, force: bool) -> anyhow::Result<Option<OrderKind>> {
    super::decide(st, c, &daemon(), now, force)
}

fn cert(renew_term: bool) -> CertConfig {
    CertConfig {
        name: "www.example.com".into(),
        alt_names: vec![],
        certificate_id: None,
        settings: std::sync::Arc::new(crate::config::CertSettings {
            product: "QUICKSSLPREMIUM",
            lifetime_months: 12,
            software: "APACHESSL",
            key: KeyKind::EcdsaP256,
            admin_contact: ContactSpec::Id(1),
            technical_contact: ContactSpec::Id(1),
            dns: DnsMode::Autodns,
            dns_hook: Default::default(),
            validation: crate::config::Validation::Dns,
            smime: None,
            reload: Default::default(),
            renew_before: RenewBefore::Share(1.0 / 3.0),
            renew_term,
            max_paid_orders: 1,
            hook_timeout: Duration::from_secs(60),
            key_access: crate::store::KeyAccess::default(),
            new_orders: true,
            serve_check: Default::default(),
            serve_check_timeout: Duration::from_secs(10),
            serve_check_interval: Duration::from_secs(3600),
        }),
    }
}

const DAY: i64 = 86_400;

fn issued(now: i64, days_left: i64, term_days_left: i64) -> CertState {
    CertState {
        certificate_id: Some(7),
        not_before: Some(now - (90 - days_left) * DAY),
        not_after: Some(now + days_left * DAY),
        term_end: Some(now + term_days_left * DAY),
        generation: Some(1),
        deployed: true,
        ..CertState::default()
    }
}

#[test]
fn a_new_certificate_is_created_and_a_failed_create_is_reissued() {
    let now = 1_800_000_000;
    assert_eq!(
        decide(&CertState::default(), &cert(false), now, false).unwrap(),
        Some(OrderKind::Create)
    );
    let failed = CertState {
        certificate_id: Some(7),
        ..CertState::default()
    };
    assert_eq!(
        decide(&failed, &cert(false), now, false).unwrap(),
        Some(OrderKind::Reissue)
    );
}

#[test]
fn reissue_only_inside_the_window_or_when_forced() {
    let now = 1_800_000_000;
    // 90-day certificates: the window opens with 30 days left.
    assert_eq!(decide(&issued(now, 60, 300), &cert(false), now, false).unwrap(), None);
    assert_eq!(
        decide(&issued(now, 60, 300), &cert(false), now, true).unwrap(),
        Some(OrderKind::Reissue)
    );
    assert_eq!(
        decide(&issued(now, 29, 300), &cert(false), now, false).unwrap(),
        Some(OrderKind::Reissue)
    );
    assert_eq!(
        decide(&issued(now, -3, 300), &cert(false), now, false).unwrap(),
        Some(OrderKind::Reissue)
    );
    let mut by_duration = cert(false);
    std::sync::Arc::make_mut(&mut by_duration.settings).renew_before =
        RenewBefore::Before(Duration::from_secs(10 * DAY as u64));
    assert_eq!(decide(&issued(now, 11, 300), &by_duration, now, false).unwrap(), None);
    assert_eq!(
        decide(&issued(now, 9, 300), &by_duration, now, false).unwrap(),
        Some(OrderKind::Reissue)
    );
}

#[test]
fn the_term_is_renewed_only_when_allowed() {
    let now = 1_800_000_000;
    let ended = issued(now, 20, -1);
    let e = decide(&ended, &cert(false), now, false).unwrap_err().to_string();
    assert!(e.contains("renew_term = true"), "{e}");
    assert_eq!(decide(&ended, &cert(true), now, false).unwrap(), Some(OrderKind::Renew));
    // Close to the term's end a reissue would not outlive it: renew instead, if allowed.
    assert_eq!(
        decide(&issued(now, 20, 20), &cert(true), now, false).unwrap(),
        Some(OrderKind::Renew)
    );
    // Without renew_term, a reissue there would gain nothing (the CA ends it with the term):
    // nothing is due until the term ends, and no error before then.
    assert_eq!(decide(&issued(now, 20, 20), &cert(false), now, false).unwrap(), None);
    assert!(decide(&issued(now, 20, 20), &cert(false), now + 20 * DAY, false).is_err());
}

#[test]
fn the_spend_guard_counts_accepted_and_lost_requests_but_not_those_never_made() {
    let mut st = CertState::default();
    let req = |status: &str, term| PaidRequest {
        kind: OrderKind::Renew,
        ctid: "c".into(),
        sent_at: 0,
        term,
        status: serde_json::from_value(serde_json::Value::String(status.into())).unwrap(),
        job_id: None,
    };
    st.paid = vec![req("not_made", 5), req("sent", 5), req("accepted", 9)];
    assert_eq!(paid_in_term(&st, OrderKind::Renew, 5), 1);
    assert_eq!(paid_in_term(&st, OrderKind::Renew, 9), 1);
    assert_eq!(paid_in_term(&st, OrderKind::Create, 5), 0);
}

// The state machine.

const MODES: [DnsMode; 2] = [DnsMode::Hook, DnsMode::Autodns];

#[test]
fn each_step_moves_to_the_next_and_only_an_unarrived_request_or_unserved_records_move_back() {
    for (i, from) in Step::ALL.iter().enumerate() {
        for to in Step::ALL {
            let forward = Step::ALL.get(i + 1) == Some(&to);
            let back = (*from == Step::Sending && to == Step::DnsVerified)
                || (*from == Step::DnsPublished && to == Step::Prepared);
            assert_eq!(allowed(*from, to), forward || back, "{} -> {}", from.name(), to.name());
        }
    }
    // Every allowed move is listed once, and nothing leaves `installed` but the order's end.
    assert_eq!(TRANSITIONS.len(), Step::ALL.len() + 1);
    assert!(Step::ALL.iter().all(|to| !allowed(Step::Installed, *to)));
}

#[test]
fn the_steps_written_to_disk_in_each_dns_mode() {
    let hook = [
        Step::Prepared,
        Step::DnsPublished,
        Step::Sending,
        Step::Accepted,
        Step::JobDone,
    ];
    let autodns = [Step::Sending, Step::Accepted, Step::JobDone];
    for step in Step::ALL {
        assert_eq!(
            persists(step, DnsMode::Hook),
            hook.contains(&step),
            "hook: {}",
            step.name()
        );
        assert_eq!(
            persists(step, DnsMode::Autodns),
            autodns.contains(&step),
            "autodns: {}",
            step.name()
        );
    }
}

#[test]
fn a_move_writes_the_journal_where_its_step_persists_and_on_every_step_back() {
    for dns in MODES {
        for (from, to) in TRANSITIONS {
            let expected = if to < from { true } else { persists(to, dns) };
            assert_eq!(
                writes(from, to, dns),
                expected,
                "{} -> {} ({dns:?})",
                from.name(),
                to.name()
            );
        }
        // The request that never arrived: `sending` is on disk and must not stay there.
        assert!(writes(Step::Sending, Step::DnsVerified, dns));
        // Before a paid request leaves, and once the API holds our job, the journal is on disk.
        assert!(writes(Step::DnsVerified, Step::Sending, dns));
        assert!(writes(Step::Sending, Step::Accepted, dns));
    }
}

fn paid(kind: OrderKind, term: i64, status: &str) -> PaidRequest {
    PaidRequest {
        kind,
        ctid: "c".into(),
        sent_at: 0,
        term,
        status: serde_json::from_value(serde_json::Value::String(status.into())).unwrap(),
        job_id: None,
    }
}

#[test]
fn the_spend_guard_counts_per_kind_and_term() {
    let term_end = 1_800_000_000;
    let mut st = CertState {
        term_end: Some(term_end),
        ..CertState::default()
    };
    // A create pays for term 0, a renew for the term it renews.
    assert_eq!(term_of(OrderKind::Create, &st), 0);
    assert_eq!(term_of(OrderKind::Renew, &st), term_end);
    assert_eq!(spend_guard(&st, OrderKind::Create, 1), None);
    assert_eq!(spend_guard(&st, OrderKind::Renew, 1), None);

    // A request proven never to have arrived costs nothing; one accepted or lost counts.
    st.paid = vec![paid(OrderKind::Create, 0, "not_made")];
    assert_eq!(spend_guard(&st, OrderKind::Create, 1), None);
    st.paid.push(paid(OrderKind::Create, 0, "sent"));
    assert_eq!(spend_guard(&st, OrderKind::Create, 1), Some(1));
    assert_eq!(spend_guard(&st, OrderKind::Create, 2), None);
    st.paid.push(paid(OrderKind::Create, 0, "accepted"));
    assert_eq!(spend_guard(&st, OrderKind::Create, 2), Some(2));

    // Creates do not count against renewals, nor an earlier term's renewal against this one.
    st.paid.push(paid(OrderKind::Renew, term_end - 365 * DAY, "accepted"));
    assert_eq!(spend_guard(&st, OrderKind::Renew, 1), None);
    st.paid.push(paid(OrderKind::Renew, term_end, "accepted"));
    assert_eq!(spend_guard(&st, OrderKind::Renew, 1), Some(1));

    // A reissue is free: never refused, whatever was paid.
    assert_eq!(spend_guard(&st, OrderKind::Reissue, 1), None);
}

#[test]
fn the_endings_and_their_dns_cleanup() {
    let cleans_up = [
        (Ending::Installed, true),
        (Ending::DeliveryRefused, true),
        (Ending::RequestRefused, true),
        (Ending::JobFailed, true),
        (Ending::SpendGuard, true),
    ];
    assert_eq!(cleans_up.len(), Ending::ALL.len());
    for (ending, cleans) in cleans_up {
        assert_eq!(ending.cleans_up(), cleans, "{ending:?}");
        // The deploy writes the state after `installed`; every other ending writes it at once.
        assert_eq!(ending.writes(), ending != Ending::Installed, "{ending:?}");
        for step in Step::ALL {
            // Nothing to remove in autodns mode, nor before the hook may have run.
            assert!(
                !dns_cleanup(ending, step, DnsMode::Autodns),
                "{ending:?} at {}",
                step.name()
            );
            assert_eq!(
                dns_cleanup(ending, step, DnsMode::Hook),
                cleans && step >= Step::Prepared,
                "{ending:?} at {}",
                step.name()
            );
        }
    }
}
