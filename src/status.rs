//! `certkeeper status`: what each certificate's state file says, as rows for a table or JSON.

use time::OffsetDateTime;

use crate::config::Config;
use crate::store::{CertState, Store};

/// The states `status` reports, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum State {
    /// An order is under way, at this step.
    Ordering(crate::store::OrderKind, crate::store::Step),
    /// An order under way failed at this step (a wrong password, a DNS hook that failed, ...);
    /// it goes on from there after its backoff. What is live stays live.
    Retrying(crate::store::OrderKind, crate::store::Step),
    /// The order was made and its job waits for a person to answer the CA's approval mail
    /// (`validation = "email"`).
    AwaitingApproval,
    /// The request was sent and its answer is awaited, or was lost and certkeeper looks for it.
    Reconciling(crate::store::OrderKind),
    /// The answer to a paid request was lost and the grace has passed without the evidence
    /// settling it: nothing is sent until `certkeeper resolve` settles it.
    PaymentUnresolved(crate::store::OrderKind),
    /// Issued, but the reload hook failed: the previous certificate is live.
    IssuedNotDeployed,
    /// Issued and the reload hook said yes, but a `serve_check` address does not hand it out:
    /// the previous certificate is live again (or, for a first one, this one stays).
    IssuedNotServed,
    /// Deployed, but at the daemon's last served check an address no longer handed it out.
    NotServed,
    /// The first certificate is in place (nothing to go back to), but the reload hook failed.
    InstalledReloadFailed,
    Deployed,
    /// The live certificate has expired: never reported as healthy.
    Expired,
    /// Something the configuration does not allow (a new order, the next term, another paid
    /// request, a choice between orders) waits for the operator; nothing was bought.
    WaitingForConsent,
    /// The order term has ended and is not renewed: nothing more can be issued in it.
    TermEnded,
    /// The last attempt failed and nothing is installed.
    Failed,
    NotIssued,
}

impl State {
    pub(crate) fn of(st: &CertState, now: i64) -> Self {
        let expired = st.not_after.is_some_and(|na| na <= now);
        if let Some(j) = &st.order {
            match j.step {
                crate::store::Step::Sending if j.unresolved_since.is_some() => Self::PaymentUnresolved(j.kind),
                crate::store::Step::Sending => Self::Reconciling(j.kind),
                crate::store::Step::Accepted if j.approver.is_some() => Self::AwaitingApproval,
                _ if st.failures > 0 && st.last_failure.is_some_and(|f| f >= j.started_at) => {
                    Self::Retrying(j.kind, j.step)
                }
                _ => Self::Ordering(j.kind, j.step),
            }
        } else if st.pending_deploy.is_some() && st.not_served.is_some() {
            Self::IssuedNotServed
        } else if st.pending_deploy.is_some() && st.pending_deploy == st.generation {
            Self::InstalledReloadFailed
        } else if st.pending_deploy.is_some() {
            Self::IssuedNotDeployed
        } else if st.term_end.is_some_and(|t| t <= now) && (expired || !st.deployed) {
            Self::TermEnded
        } else if st.consent.is_some() {
            Self::WaitingForConsent
        } else if expired && st.generation.is_some() {
            Self::Expired
        } else if st.deployed && st.not_served.is_some() {
            Self::NotServed
        } else if st.deployed {
            Self::Deployed
        } else if st.last_error.is_some() {
            Self::Failed
        } else {
            Self::NotIssued
        }
    }
}

impl State {
    /// The state's stable name in `status --json`: lower case, one of a closed set that only
    /// grows with a new `schema_version`.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            Self::Ordering(..) => "ordering",
            Self::Retrying(..) => "retrying",
            Self::Reconciling(_) => "reconciling",
            Self::AwaitingApproval => "awaiting_approval",
            Self::PaymentUnresolved(_) => "payment_unresolved",
            Self::IssuedNotDeployed => "issued_not_deployed",
            Self::IssuedNotServed => "issued_not_served",
            Self::NotServed => "not_served",
            Self::InstalledReloadFailed => "installed_reload_failed",
            Self::Deployed => "deployed",
            Self::Expired => "expired",
            Self::WaitingForConsent => "waiting_for_consent",
            Self::TermEnded => "term_ended",
            Self::Failed => "failed",
            Self::NotIssued => "not_issued",
        }
    }

    /// What happens next, given when the next attempt is due (`None`: never by itself).
    pub(crate) fn next(&self, name: &str, at: Option<&str>) -> String {
        let at = at.unwrap_or("-");
        match self {
            Self::Ordering(..) => format!("the order goes on from this step at {at}, or at the next run"),
            Self::Retrying(..) => format!("the order is tried again from this step at {at} (see the last error)"),
            Self::Reconciling(_) => format!(
                "the next run looks for the request again ({at}); nothing is sent again until it is found or counts as never made"
            ),
            Self::AwaitingApproval => {
                format!(
                    "issued once the approval mail is answered; the job is looked at again at {at}, or at the next run"
                )
            }
            Self::PaymentUnresolved(_) => {
                format!("nothing is sent until `certkeeper resolve {name}` settles it (the next run still looks)")
            }
            Self::IssuedNotDeployed => {
                format!("the issued certificate is installed and the reload tried again at {at}")
            }
            Self::InstalledReloadFailed => format!("the reload is tried again at {at}"),
            Self::IssuedNotServed => {
                format!("the issued certificate is installed, the reload run and what is served checked again at {at}")
            }
            Self::NotServed => {
                format!("checked again at the daemon's next served check; reissued at {at}")
            }
            Self::Deployed => format!("reissued at {at}"),
            Self::Expired => format!("reissued at {at}; until then the expired certificate stays installed"),
            Self::WaitingForConsent if at == "-" => {
                "nothing is bought until the operator allows it; the next run acts once the setting changes".into()
            }
            Self::WaitingForConsent => format!(
                "nothing is bought until the operator allows it; asked again at {at}, and at the next run once the setting changes"
            ),
            Self::TermEnded => {
                "nothing more can be issued in this term: set renew_term = true to buy the next, or order anew".into()
            }
            Self::Failed => format!("tried again at {at}"),
            Self::NotIssued => format!("ordered at {at}"),
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ordering(kind, step) => write!(f, "ordering ({}, at {})", kind.name(), step.name()),
            Self::Retrying(kind, step) => write!(f, "retrying ({}, failed at {})", kind.name(), step.name()),
            Self::Reconciling(kind) => write!(
                f,
                "reconciling (the {} request's answer is awaited or was lost)",
                kind.name()
            ),
            Self::PaymentUnresolved(kind) => write!(
                f,
                "payment unresolved (the {} request's answer was lost; see certkeeper resolve)",
                kind.name()
            ),
            Self::AwaitingApproval => f.write_str("waiting for approval"),
            Self::IssuedNotDeployed => f.write_str("issued, not deployed"),
            Self::IssuedNotServed => f.write_str("issued, not served"),
            Self::NotServed => f.write_str("deployed, not served"),
            Self::InstalledReloadFailed => f.write_str("installed, reload hook failed"),
            Self::Deployed => f.write_str("deployed"),
            Self::Expired => f.write_str("expired"),
            Self::WaitingForConsent => f.write_str("waiting for consent"),
            Self::TermEnded => f.write_str("term ended"),
            Self::Failed => f.write_str("failed"),
            Self::NotIssued => f.write_str("not issued"),
        }
    }
}

/// The version of `status --json`'s layout: raised when a field changes meaning or goes away,
/// or a state is added.
pub(crate) const SCHEMA_VERSION: u32 = 4;

/// `status --json`: the schema version and one row per configured certificate.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    pub schema_version: u32,
    pub certificates: Vec<StatusRow>,
    /// A campaign in progress (`--renew-now --all`), else null.
    pub campaign: Option<CampaignRow>,
}

/// A campaign in progress, as `status` shows it.
#[derive(Debug, serde::Serialize)]
pub(crate) struct CampaignRow {
    pub id: String,
    /// RFC 3339.
    pub started: String,
    pub selection: String,
    pub total: usize,
    /// Ended, done or failed.
    pub ended: usize,
    pub failed: usize,
}

/// The campaign in progress, read from the state directory.
pub(crate) fn campaign(config: &Config) -> Option<CampaignRow> {
    let store = Store::new(
        &config.store.state_dir,
        &config.store.live_dir,
        config.store.keep_generations,
    );
    let (c, log) = store.campaign().ok().flatten()?;
    Some(CampaignRow {
        id: c.id,
        started: crate::text::time(c.started),
        selection: c.selection,
        total: c.names.len(),
        ended: log.ended_count(),
        failed: log.failed.len(),
    })
}

/// One row of `status`. `serial`, `not_after` and `days_left` are those of the live
/// certificate (the one `live/NAME` points at); `issued` is a newer one that is not live yet.
#[derive(Debug, serde::Serialize)]
pub(crate) struct StatusRow {
    pub name: String,
    pub serial: Option<String>,
    pub not_after: Option<String>,
    pub days_left: Option<f64>,
    pub term_end: Option<String>,
    /// When the next reissue or renewal is due.
    pub next_renewal: Option<String>,
    /// One of [`State::code`]'s names.
    pub state: &'static str,
    /// The state in words, as the table shows it.
    pub state_text: String,
    /// What happens next, in words.
    pub next: String,
    pub last_error: Option<String>,
    /// The path `live/NAME`, and the generation it points at.
    pub live: String,
    pub live_generation: Option<u32>,
    pub issued: Option<Issued>,
    /// What each `serve_check` address handed out at the last check.
    pub served: Vec<crate::store::Served>,
    /// A `certkeeper revoke` under way: `{serial, reason, step, since, ctid}`.
    pub revocation: Option<crate::store::Revocation>,
    /// The serials certkeeper revoked: `{serial, reason, at}`.
    pub revoked: Vec<crate::store::Revoked>,
}

/// A certificate that was issued and written, but is not live (its reload failed).
#[derive(Debug, serde::Serialize)]
pub(crate) struct Issued {
    pub generation: u32,
    pub serial: Option<String>,
    pub not_after: Option<String>,
}

pub(crate) fn rows(config: &Config) -> Vec<StatusRow> {
    let store = Store::new(
        &config.store.state_dir,
        &config.store.live_dir,
        config.store.keep_generations,
    );
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let fmt = |t: Option<i64>| {
        t.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
    };
    config
        .certificates
        .iter()
        .map(|c| {
            let st: CertState = store.load(&c.name).unwrap_or_default();
            let state = State::of(&st, now);
            let live_generation = store.live_generation(&c.name);
            let read = |g: u32| {
                store
                    .generation_cert(&c.name, g)
                    .ok()
                    .and_then(|p| crate::x509::info(&p).ok())
            };
            let issued = st.pending_deploy.filter(|g| Some(*g) != live_generation).map(|g| {
                let info = read(g);
                Issued {
                    generation: g,
                    serial: info.as_ref().map(|i| i.serial.clone()),
                    not_after: info.and_then(|i| fmt(Some(i.not_after.unix_timestamp()))),
                }
            });
            let next_renewal = {
                let d = crate::order::next(c, &st, &config.daemon, now);
                if d.action == crate::schedule::Action::TermEnded {
                    None
                } else {
                    fmt(Some(d.at.max(now)))
                }
            };
            StatusRow {
                name: c.name.clone(),
                serial: st.serial.clone(),
                not_after: fmt(st.not_after),
                days_left: st
                    .not_after
                    // (+ 0.0 turns the -0.0 of a certificate that just expired into 0.0.)
                    .map(|na| ((na - now) as f64 / 86400.0 * 10.0).round() / 10.0 + 0.0),
                term_end: fmt(st.term_end),
                next: match (crate::order::plan::changed(c, &st), &st.consent) {
                    // What waits says how to allow it.
                    (_, Some(consent)) if state == State::WaitingForConsent => {
                        format!("{}; {}", consent.give, state.next(&c.name, next_renewal.as_deref()))
                    }
                    // A changed configuration is why the reissue comes now.
                    (Some(why), _) if matches!(state, State::Deployed | State::Expired) => {
                        format!("{}, because {why}", state.next(&c.name, next_renewal.as_deref()))
                    }
                    _ => state.next(&c.name, next_renewal.as_deref()),
                },
                next_renewal,
                state: state.code(),
                state_text: match &st.consent {
                    Some(consent) if state == State::WaitingForConsent => format!("{state}: {}", consent.what),
                    // An ended term says what waits for the operator: its next term.
                    Some(consent) if state == State::TermEnded => {
                        format!("{state}: {} waits for consent", consent.what)
                    }
                    // Who is to answer the approval mail.
                    _ if state == State::AwaitingApproval => {
                        let approver = st.order.as_ref().and_then(|j| j.approver.as_deref()).unwrap_or("-");
                        format!("{state} by {approver}")
                    }
                    _ => match &st.not_served {
                        Some(what) if matches!(state, State::IssuedNotServed | State::NotServed) => {
                            format!("{state} ({what})")
                        }
                        _ => state.to_string(),
                    },
                },
                last_error: st.last_error.clone(),
                live: config.store.live_dir.join(&c.name).display().to_string(),
                live_generation,
                issued,
                served: st.served.clone(),
                revocation: st.revocation.clone(),
                revoked: st.revoked.clone(),
            }
        })
        .collect()
}

/// Renders the status rows as a table.
pub(crate) fn table(rows: &[StatusRow]) -> String {
    let mut out = format!(
        "{:<28} {:<34} {:<21} {:>9} {:<21} {:<21} {}\n",
        "NAME", "SERIAL", "NOT AFTER", "DAYS LEFT", "TERM END", "NEXT RENEWAL", "STATE"
    );
    for r in rows {
        let day = |s: &Option<String>| {
            s.as_deref()
                .map(|s| s.chars().take(19).collect::<String>())
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "{:<28} {:<34} {:<21} {:>9} {:<21} {:<21} {}\n",
            r.name,
            r.serial.as_deref().unwrap_or("-"),
            day(&r.not_after),
            r.days_left.map(|d| format!("{d:.1}")).unwrap_or_else(|| "-".into()),
            day(&r.term_end),
            day(&r.next_renewal),
            r.state_text
        ));
        if let Some(i) = &r.issued {
            out.push_str(&format!(
                "    issued, not live: {} (until {})\n",
                i.serial.as_deref().unwrap_or("-"),
                day(&i.not_after)
            ));
        }
        if let Some(v) = &r.revocation {
            out.push_str(&format!(
                "    revocation of {} ({}) under way: `certkeeper revoke {} --reason {}` goes on with it\n",
                v.serial,
                v.reason.name(),
                r.name,
                v.reason.name()
            ));
        }
        if let Some(e) = &r.last_error {
            out.push_str(&format!("    last error: {e}\n"));
        }
        out.push_str(&format!("    next: {}\n", r.next));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    /// `--json` states were free text with Rust enum names in them. They are a closed set of
    /// lower-case names, each documented in README.md, each saying what happens next.
    #[test]
    fn every_state_has_a_stable_documented_name_and_says_what_happens_next() {
        use crate::store::{OrderKind, Step};
        let all = [
            State::Ordering(OrderKind::Create, Step::Keyed),
            State::Retrying(OrderKind::Reissue, Step::Prepared),
            State::Reconciling(OrderKind::Renew),
            State::PaymentUnresolved(OrderKind::Create),
            State::IssuedNotDeployed,
            State::IssuedNotServed,
            State::NotServed,
            State::InstalledReloadFailed,
            State::Deployed,
            State::Expired,
            State::WaitingForConsent,
            State::TermEnded,
            State::Failed,
            State::NotIssued,
        ];
        let readme = include_str!("../README.md");
        let mut codes = std::collections::HashSet::new();
        for s in all {
            let code = s.code();
            assert!(code.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{code}");
            assert!(codes.insert(code), "{code} twice");
            assert!(
                readme.contains(&format!("`{code}`")),
                "README.md does not document {code}"
            );
            assert!(
                !s.to_string().contains("Create") && !s.to_string().contains("Keyed"),
                "{s}"
            );
            let next = s.next("www.example.com", Some("2027-01-01T00:00:00Z"));
            assert!(
                next.contains("2027-01-01T00:00:00Z") || matches!(s, State::TermEnded | State::PaymentUnresolved(_)),
                "{code}: {next}"
            );
        }
    }

    /// A wrong password or a failed DNS hook showed as "ordering (Create, at keyed)", as if all
    /// were well. An order that failed says so.
    #[test]
    fn an_order_that_failed_is_retrying_not_ordering() {
        use crate::store::{OrderKind, Step};
        let journal = serde_json::json!({
            "id": "o",
            "kind": OrderKind::Create,
            "step": Step::Keyed,
            "started_at": NOW - 60,
        });
        let mut st = CertState {
            order: Some(serde_json::from_value(journal).unwrap()),
            ..CertState::default()
        };
        assert_eq!(State::of(&st, NOW).code(), "ordering");
        st.failures = 1;
        st.last_failure = Some(NOW - 30);
        st.last_error = Some("the API refused the request: E0101".into());
        assert_eq!(State::of(&st, NOW).code(), "retrying");
        assert_eq!(State::of(&st, NOW).to_string(), "retrying (create, failed at keyed)");
        // A failure from before this order began is not this order's.
        st.last_failure = Some(NOW - 120);
        assert_eq!(State::of(&st, NOW).code(), "ordering");
    }

    /// An expired certificate was shown as "deployed", with -0.0 days left.
    #[test]
    fn an_expired_certificate_is_never_shown_as_healthy() {
        let live = CertState {
            certificate_id: Some(1),
            generation: Some(1),
            deployed: true,
            not_after: Some(NOW + 86_400),
            term_end: Some(NOW + 300 * 86_400),
            ..CertState::default()
        };
        assert_eq!(State::of(&live, NOW), State::Deployed);
        assert_eq!(State::of(&live, NOW + 86_400).to_string(), "expired");
        let ended = CertState {
            not_after: Some(NOW),
            term_end: Some(NOW),
            ..live.clone()
        };
        assert_eq!(State::of(&ended, NOW).to_string(), "term ended");
        assert_eq!(State::of(&ended, NOW - 1), State::Deployed);
    }
}
