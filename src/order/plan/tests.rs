//! The order's rules under test: what is due, and (below) the state machine.

use std::time::Duration;

use super::*;
use crate::config::{ContactSpec, KeyKind, RenewBefore};
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
        product: "QUICKSSLPREMIUM".into(),
        lifetime_months: 12,
        software: "APACHESSL".into(),
        key: KeyKind::EcdsaP256,
        admin_contact: ContactSpec::Id(1),
        technical_contact: ContactSpec::Id(1),
        dns: DnsMode::Autodns,
        dns_hook: vec![],
        reload: vec![],
        renew_before: RenewBefore::Share(1.0 / 3.0),
        renew_term,
        max_paid_orders: 1,
        hook_timeout: Duration::from_secs(60),
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
    by_duration.renew_before = RenewBefore::Before(Duration::from_secs(10 * DAY as u64));
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
    assert_eq!(
        decide(&issued(now, 20, 20), &cert(false), now, false).unwrap(),
        Some(OrderKind::Reissue)
    );
}

#[test]
fn the_spend_guard_counts_accepted_and_lost_requests_but_not_those_never_made() {
    let mut st = CertState::default();
    let req = |status: &str, term| PaidRequest {
        kind: OrderKind::Renew,
        ctid: "c".into(),
        sent_at: 0,
        term,
        status: status.into(),
        job_id: None,
    };
    st.paid = vec![req("not_made", 5), req("sent", 5), req("accepted", 9)];
    assert_eq!(paid_in_term(&st, OrderKind::Renew, 5), 1);
    assert_eq!(paid_in_term(&st, OrderKind::Renew, 9), 1);
    assert_eq!(paid_in_term(&st, OrderKind::Create, 5), 0);
}
