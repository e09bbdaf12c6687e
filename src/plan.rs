//! `certkeeper plan`: what a run would do for each certificate, when, why, and whether it costs
//! money, before anything is done. It reads the state files and asks the API only with searches
//! and infos (whether the account already holds an order for a name about to be ordered):
//! nothing is prepared, ordered, confirmed or written, and no lock is taken.

use time::OffsetDateTime;

use crate::config::Config;
use crate::order::Agent;
use crate::schedule::Action;
use crate::store::CertState;

/// The version of `plan --json`'s layout.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// `plan --json`: the schema version and one step per certificate.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Plan {
    pub schema_version: u32,
    pub certificates: Vec<Step>,
}

/// What would happen to one certificate.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Step {
    pub name: String,
    /// The next thing: `create`, `adopt`, `reissue`, `renew`, `resume`, `deploy`, `choose`
    /// (nothing is bought until the operator names an order), `refused` (nothing is bought:
    /// `new_orders = "deny"`, the spend guard, or the account could not be searched) or
    /// `term_ended`.
    pub action: &'static str,
    /// When (RFC 3339); now or in the past means the next run does it.
    pub at: Option<String>,
    /// Whether it is due at the next run.
    pub due: bool,
    /// Whether it costs money (a create or a term renewal).
    pub paid: bool,
    /// Product and term of a paid step.
    pub product: Option<String>,
    pub months: Option<u32>,
    pub why: String,
}

/// Works out the plan. `Err` only when the agent cannot be set up; a failed search is reported
/// in the certificate's step (its create would not be sent either).
pub(crate) async fn plan(config: Config) -> anyhow::Result<Plan> {
    let agent = Agent::new(config)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut steps = Vec::new();
    for cert in &agent.config.certificates {
        let st: CertState = agent.store.load(&cert.name).unwrap_or_default();
        let d = crate::order::next(cert, &st, &agent.config.daemon, now);
        let at = crate::text::time(d.at.max(now));
        let due = d.at <= now;
        let mut step = Step {
            name: cert.name.clone(),
            action: "reissue",
            at: Some(at.clone()),
            due,
            paid: false,
            product: None,
            months: None,
            why: String::new(),
        };
        if let Some(g) = st.pending_deploy.filter(|_| st.order.is_none()) {
            step.action = "deploy";
            step.why = format!("generation {g} was issued but its reload failed; it is installed again (free)");
        } else if let Some(j) = &st.order {
            step.action = "resume";
            step.paid = false;
            step.why = format!(
                "the {} order in flight goes on from {} (anything it costs was decided when it began)",
                j.kind.name(),
                j.step.name()
            );
        } else {
            match d.action {
                Action::TermEnded => {
                    step.action = "term_ended";
                    step.at = None;
                    step.due = false;
                    step.why =
                        "the order term has ended and renew_term is off: nothing more can be issued in it".into();
                }
                Action::Reissue | Action::Resume => {
                    step.action = "reissue";
                    step.why = match crate::order::plan::changed(cert, &st) {
                        Some(why) => format!("a free reissue, because {why}"),
                        None if due => "a free reissue: the certificate is due".into(),
                        None => format!("a free reissue at {at}"),
                    };
                }
                Action::Renew => {
                    step.action = "renew";
                    step.paid = true;
                    step.product = Some(cert.product.to_string());
                    step.months = Some(cert.lifetime_months);
                    step.why = format!(
                        "renew_term = true: the next {}-month term of {} is bought at {at}",
                        cert.lifetime_months, cert.product
                    );
                }
                Action::Create => first_order(&agent, cert, now, &mut step).await,
            }
            // What the spend guard would refuse is not bought either.
            let kind = match step.action {
                "create" => Some(crate::store::OrderKind::Create),
                "renew" => Some(crate::store::OrderKind::Renew),
                _ => None,
            };
            if let Some(kind) = kind
                && let Some(spent) = crate::order::plan::spend_guard(&st, kind, cert.max_paid_orders)
            {
                let refusal = crate::order::NeedsConsent::spend_guard(cert, kind, spent);
                step.action = "refused";
                step.paid = false;
                step.why = format!("nothing would be bought: {}", refusal.give);
            }
        }
        steps.push(step);
    }
    Ok(Plan {
        schema_version: SCHEMA_VERSION,
        certificates: steps,
    })
}

/// A first order: what the account holds decides between adopting, asking, and buying.
async fn first_order(agent: &Agent, cert: &crate::config::CertConfig, now: i64, step: &mut Step) {
    use crate::order::adopt::Existing;
    match agent.find_existing(cert, now).await {
        Ok(Existing::Adopt { what, .. }) => {
            step.action = "adopt";
            step.why = format!("the account's {what} is adopted and reissued for free with a key of certkeeper's own");
        }
        Ok(Existing::Choose(why)) => {
            step.action = "choose";
            step.why = format!("nothing is bought: {why}");
        }
        Ok(Existing::None { .. }) if !cert.new_orders => {
            step.action = "refused";
            step.why = "the account holds no running order for it, and new_orders = \"deny\" forbids buying one".into();
        }
        Ok(Existing::None { .. }) => {
            step.action = "create";
            step.paid = true;
            step.product = Some(cert.product.to_string());
            step.months = Some(cert.lifetime_months);
            step.why = format!(
                "the account holds no running order for it: a new {}-month order of {} is bought",
                cert.lifetime_months, cert.product
            );
        }
        Err(e) => {
            step.action = "refused";
            step.why = format!("the account could not be searched, so nothing would be bought: {e:#}");
        }
    }
}

/// The plan as a table.
pub(crate) fn table(plan: &Plan) -> String {
    let mut out = format!(
        "{:<28} {:<10} {:<21} {:<5} {}\n",
        "NAME", "ACTION", "WHEN", "COST", "WHY"
    );
    for s in &plan.certificates {
        let when = match (&s.at, s.due) {
            (_, true) => "next run".to_string(),
            (Some(at), false) => at.chars().take(19).collect(),
            (None, _) => "-".into(),
        };
        let cost = if s.paid { "PAID" } else { "free" };
        out.push_str(&format!(
            "{:<28} {:<10} {:<21} {:<5} {}\n",
            s.name, s.action, when, cost, s.why
        ));
    }
    out
}

/// Whether the next run would buy something.
pub(crate) fn would_pay(plan: &Plan) -> bool {
    plan.certificates.iter().any(|s| s.paid && s.due)
}
