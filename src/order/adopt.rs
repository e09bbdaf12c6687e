//! Orders the account already holds. Before certkeeper would pay for a new order for a name, it
//! looks for one (`POST /certificate/_search` by `name`, a documented key, then
//! `GET /certificate/{id}` for each): exactly one whose term runs, for exactly the configured
//! names and product, is adopted and reissued for free with a key of certkeeper's own. Where
//! the account holds orders that do not fit (other names, another product, two at once),
//! nothing is bought and the operator is told which ones, and how to choose
//! (`certificate_id = N`). Only an account without a running order for the name gets a new
//! (paid) one, and only where `new_orders` allows it.

use std::collections::BTreeSet;

use anyhow::Context as _;

use super::Agent;
use crate::api::wire::{Certificate, parse_time};
use crate::config::CertConfig;

/// The most orders looked at for one name: a name ordered more often than this is a case for
/// `certificate_id`.
pub(crate) const MAX_CANDIDATES: usize = 10;

/// What the account holds for a certificate about to be ordered for the first time.
#[derive(Debug)]
pub(crate) enum Existing {
    /// One running order for exactly these names and product: reissue it.
    Adopt {
        id: i64,
        term_end: Option<i64>,
        what: String,
    },
    /// No running order for the name: a new one may be bought (where `new_orders` allows).
    None { ended: Vec<String> },
    /// Orders that do not fit, or more than one that does: nothing is bought; the operator
    /// chooses.
    Choose(String),
}

impl Agent {
    /// Looks for an order of the account to adopt for `cert`. Any failure of the search is an
    /// error: a new order is never bought because the account could not be asked.
    pub(crate) async fn find_existing(&self, cert: &CertConfig, now: i64) -> anyhow::Result<Existing> {
        let ids: Vec<i64> = match cert.certificate_id {
            Some(id) => vec![id],
            None => {
                let found = self
                    .client
                    .search_certificates(&cert.name)
                    .await
                    .with_context(|| format!("searching the account for orders of {}", cert.name))?;
                let mut ids: Vec<i64> = found.into_iter().map(|c| c.id).collect();
                ids.sort_unstable();
                ids.dedup();
                if ids.len() > MAX_CANDIDATES {
                    return Ok(Existing::Choose(format!(
                        "the account holds {} orders named {}; set certificate_id = N in its [[certificate]] table to name the one to reissue",
                        ids.len(),
                        cert.name
                    )));
                }
                ids
            }
        };
        let mut orders = Vec::new();
        for id in ids {
            let c = self
                .client
                .certificate(id)
                .await
                .with_context(|| format!("reading order {id} of the account"))?;
            orders.push(c);
        }
        Ok(judge(cert, &orders, now))
    }
}

/// Whether an order of the account is one of `cert`'s candidates: it has the certificate's name,
/// or it is the configured `certificate_id`.
pub(crate) fn is_candidate(cert: &CertConfig, c: &Certificate) -> bool {
    match cert.certificate_id {
        Some(id) => c.id == id,
        None => c
            .name
            .as_deref()
            .is_some_and(|n| n.trim_end_matches('.').eq_ignore_ascii_case(&cert.name)),
    }
}

/// What to do with the account's `orders` for `cert` (its candidates, read in full): adopt the
/// one that fits, buy where none runs, or ask.
pub(crate) fn judge(cert: &CertConfig, orders: &[Certificate], now: i64) -> Existing {
    let wanted: BTreeSet<String> = cert.all_names().into_iter().collect();
    let (mut fit, mut misfit, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for c in orders {
        let id = c.id;
        let names = names_of(c);
        let product = c.product.clone().unwrap_or_default();
        let term_end = term_end(c);
        let what = format!(
            "order {id} ({product}, {}, term {})",
            names.iter().cloned().collect::<Vec<_>>().join(" "),
            term_end.map_or("end unknown".into(), crate::text::time)
        );
        if term_end.is_some_and(|t| t <= now) {
            ended.push(what);
        } else if names != wanted {
            misfit.push(format!(
                "{what}: other names than the configured {}",
                cert.all_names().join(" ")
            ));
        } else if !product.eq_ignore_ascii_case(cert.product) {
            misfit.push(format!("{what}: product {product}, configured {}", cert.product));
        } else {
            // Only the payable date is stored as the term's end; an estimate is not.
            let payable = c.payable.as_deref().and_then(parse_time).map(|t| t.unix_timestamp());
            fit.push((id, payable, what));
        }
    }
    let choose = |found: &[String]| {
        format!(
            "{} already holds {}; certkeeper buys nothing for it while that is so: set certificate_id = N in its [[certificate]] table to reissue one (free), or change its names or product to match",
            if cert.certificate_id.is_some() {
                "the configured certificate_id"
            } else {
                "the account"
            },
            found.join("; ")
        )
    };
    match (fit.len(), cert.certificate_id) {
        (1, _) => {
            let (id, term_end, what) = fit.remove(0);
            Existing::Adopt { id, term_end, what }
        }
        (0, None) if misfit.is_empty() => Existing::None { ended },
        (0, Some(id)) if misfit.is_empty() => Existing::Choose(format!(
            "certificate_id = {id} of {} cannot be reissued: {}",
            cert.name,
            if ended.is_empty() {
                "no such order".into()
            } else {
                format!("{}, whose term has ended", ended.join("; "))
            }
        )),
        (0, _) => Existing::Choose(choose(&misfit)),
        _ => {
            let all: Vec<String> = fit.into_iter().map(|(_, _, w)| w).chain(misfit).collect();
            Existing::Choose(choose(&all))
        }
    }
}

/// The names a certificate of the account covers: its common name, its subjectAlternativeNames,
/// and those of the certificate it holds, lower case.
pub(crate) fn names_of(c: &Certificate) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = c.name.iter().map(|n| n.to_ascii_lowercase()).collect();
    names.extend(
        c.subject_alternative_names
            .iter()
            .filter_map(|s| s.name.as_ref())
            .map(|n| n.to_ascii_lowercase()),
    );
    if let Some(info) = c.server.as_deref().and_then(|pem| crate::x509::info(pem).ok()) {
        names.extend(info.names.iter().map(|n| n.to_ascii_lowercase()));
    }
    names
}

/// When the order's term ends: its payable date, or else its creation plus its lifetime (the
/// answers of 2018 to 2020 carry no payable date). `None` when neither is known.
pub(crate) fn term_end(c: &Certificate) -> Option<i64> {
    if let Some(t) = c.payable.as_deref().and_then(parse_time) {
        return Some(t.unix_timestamp());
    }
    let created = c.created.as_deref().and_then(parse_time)?;
    let lifetime = c.lifetime.as_ref()?;
    let period = lifetime.period.filter(|p| (1..=120).contains(p))?;
    let months = match lifetime.unit.as_deref() {
        Some("MONTH") | None => period,
        Some("YEAR") => period * 12,
        Some(_) => return None,
    };
    add_months(created, months as u32).map(|t| t.unix_timestamp())
}

/// `t` plus `months` calendar months (the day clamped to the month's length).
fn add_months(t: time::OffsetDateTime, months: u32) -> Option<time::OffsetDateTime> {
    let total = t.year() * 12 + t.month() as i32 - 1 + months as i32;
    let (year, month) = (
        total.div_euclid(12),
        time::Month::try_from((total.rem_euclid(12) + 1) as u8).ok()?,
    );
    let day = t.day().min(time::util::days_in_month(month, year));
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    Some(t.replace_date(date))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_term_is_its_payable_date_or_its_creation_plus_its_lifetime() {
        let c = |json: serde_json::Value| -> Certificate { serde_json::from_value(json).unwrap() };
        let paid = c(serde_json::json!({"id": 1, "payable": "2022-12-25T00:00:00.000+0100",
            "created": "2022-01-13T13:33:21.000+0100", "lifetime": {"unit": "MONTH", "period": 12}}));
        assert_eq!(term_end(&paid), Some(1_671_922_800));
        let old = c(serde_json::json!({"id": 1, "created": "2018-01-31T00:00:00.000+0100",
            "lifetime": {"unit": "MONTH", "period": 13}}));
        // 31 January plus 13 months: 28 February of the next year.
        assert_eq!(
            term_end(&old).map(|t| time::OffsetDateTime::from_unix_timestamp(t).unwrap().date()),
            Some(time::macros::date!(2019 - 02 - 27))
        );
        assert_eq!(term_end(&c(serde_json::json!({"id": 1}))), None);
    }
}
