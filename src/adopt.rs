//! `certkeeper adopt`: the account's certificates beside the configuration. It lists what the
//! account holds (`POST /certificate/_search` page by page, then `GET /certificate/{id}` for
//! each, since a search answer need not carry every field), marks the orders that match a
//! configured certificate and says what certkeeper would do with each. Without `--write` it
//! sends nothing but searches and infos and writes nothing; with `--write` it binds each order
//! that fits to its certificate in the state directory (under the lock), so that the next run
//! reissues it for free with a key of certkeeper's own.

use std::io::IsTerminal as _;

use anyhow::Context as _;
use time::OffsetDateTime;

use crate::api::wire::Certificate;
use crate::config::{CertConfig, Config};
use crate::order::Agent;
use crate::order::adopt::{self, Existing};
use crate::run::{Exit, Refusal};

/// The version of `adopt --json`'s layout.
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// A search page's size.
const PAGE: usize = 100;

/// The most certificates listed: an account with more is listed up to here, and says so.
pub(crate) const MAX_LISTED: usize = 2000;

/// `adopt --json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Report {
    pub schema_version: u32,
    /// Every certificate of the account (up to [`MAX_LISTED`]), by id.
    pub account: Vec<Order>,
    /// Whether the account holds more than were listed.
    pub truncated: bool,
    /// What certkeeper would do for each configured certificate.
    pub certificates: Vec<Binding>,
}

/// One certificate of the account.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Order {
    pub id: i64,
    pub name: Option<String>,
    pub product: Option<String>,
    /// `issued` (a certificate is there), `pending` (none issued yet) or `term_ended`.
    pub status: &'static str,
    /// The end of the order term (RFC 3339), where known.
    pub term_end: Option<String>,
    /// The expiry of the certificate it holds (RFC 3339), where one is issued.
    pub expires: Option<String>,
    /// Every name it covers.
    pub names: Vec<String>,
    /// The configured certificate it is a candidate for, if any.
    pub configured: Option<String>,
}

/// What certkeeper would do for one configured certificate.
#[derive(Debug, serde::Serialize)]
pub(crate) struct Binding {
    pub name: String,
    /// `bound` (the state already names its order), `adopt` (one order fits: a free reissue
    /// with a new key), `choose` (orders found that do not fit, or several: nothing is bought),
    /// `create` (no running order: a new one would be bought) or `refused` (no running order,
    /// and `new_orders = "deny"`).
    pub action: &'static str,
    /// The order it is (or would be) bound to.
    pub order: Option<i64>,
    pub why: String,
    /// Whether `--write` bound it in this run.
    pub written: bool,
}

/// Lists the account and judges each configured certificate; with `write`, binds the orders that
/// fit in the state directory.
pub(crate) async fn adopt(config: Config, write: bool) -> Result<Report, Refusal> {
    let error = |e: anyhow::Error| Refusal::new(Exit::Error, format!("{e:#}"));
    // With --write the state directory's lock is taken before the account is read, so that no
    // run starts an order in between; without it nothing is locked or written.
    let (agent, _lock) = if write {
        let (agent, lock) = crate::run::start(config)?;
        (agent, Some(lock))
    } else {
        (std::sync::Arc::new(Agent::new(config).map_err(error)?), None)
    };
    let progress = std::io::stderr().is_terminal();
    let (orders, truncated) = read_account(&agent, progress).await.map_err(error)?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut bindings = Vec::new();
    for cert in &agent.config.certificates {
        bindings.push(bind(&agent, cert, &orders, now, write).map_err(error)?);
    }
    let account = orders
        .iter()
        .map(|c| {
            let term_end = adopt::term_end(c);
            let expires = c
                .server
                .as_deref()
                .and_then(|pem| crate::x509::info(pem).ok())
                .map(|i| i.not_after.unix_timestamp())
                .or_else(|| {
                    c.expire
                        .as_deref()
                        .and_then(crate::api::wire::parse_time)
                        .map(|t| t.unix_timestamp())
                });
            Order {
                id: c.id,
                name: c.name.clone(),
                product: c.product.clone(),
                status: if term_end.is_some_and(|t| t <= now) {
                    "term_ended"
                } else if c.server.is_some() || expires.is_some() {
                    "issued"
                } else {
                    "pending"
                },
                term_end: term_end.map(crate::text::time),
                expires: expires.map(crate::text::time),
                names: adopt::names_of(c).into_iter().collect(),
                configured: agent
                    .config
                    .certificates
                    .iter()
                    .find(|k| adopt::is_candidate(k, c))
                    .map(|k| k.name.clone()),
            }
        })
        .collect();
    Ok(Report {
        schema_version: SCHEMA_VERSION,
        account,
        truncated,
        certificates: bindings,
    })
}

/// Every certificate of the account, read in full: page by page through the search, then each by
/// id. Bounded by [`MAX_LISTED`]. On a terminal, a progress line on stderr (the API allows about
/// 3 requests a second: a large account takes minutes).
#[allow(clippy::print_stderr)]
async fn read_account(agent: &Agent, progress: bool) -> anyhow::Result<(Vec<Certificate>, bool)> {
    let mut ids = Vec::new();
    let mut truncated = false;
    loop {
        let (page, total) = agent
            .client
            .list_certificates(ids.len(), PAGE)
            .await
            .context("listing the account's certificates (POST /certificate/_search)")?;
        let got = page.len();
        ids.extend(page.into_iter().map(|c| c.id));
        if ids.len() >= MAX_LISTED {
            truncated = got == PAGE || total.is_some_and(|t| t as usize > MAX_LISTED);
            ids.truncate(MAX_LISTED);
            break;
        }
        if got < PAGE || total.is_some_and(|t| ids.len() as i64 >= t) {
            break;
        }
    }
    ids.sort_unstable();
    ids.dedup();
    let mut orders = Vec::with_capacity(ids.len());
    for (i, id) in ids.iter().enumerate() {
        if progress {
            eprint!("\rreading the account's certificates: {}/{}", i + 1, ids.len());
        }
        orders.push(
            agent
                .client
                .certificate(*id)
                .await
                .with_context(|| format!("reading certificate {id} of the account"))?,
        );
    }
    if progress && !ids.is_empty() {
        eprintln!();
    }
    Ok((orders, truncated))
}

/// What certkeeper would do for `cert` with the account's `orders`; with `write`, binds an
/// order that fits.
fn bind(agent: &Agent, cert: &CertConfig, orders: &[Certificate], now: i64, write: bool) -> anyhow::Result<Binding> {
    let mut st = agent.store.load(&cert.name).unwrap_or_default();
    let mut b = Binding {
        name: cert.name.clone(),
        action: "bound",
        order: st.certificate_id,
        why: String::new(),
        written: false,
    };
    if let Some(id) = st.certificate_id {
        b.why = format!("certkeeper already keeps it with order {id}");
        return Ok(b);
    }
    let candidates: Vec<Certificate> = orders
        .iter()
        .filter(|c| adopt::is_candidate(cert, c))
        .cloned()
        .collect();
    if candidates.len() > adopt::MAX_CANDIDATES {
        b.action = "choose";
        b.order = None;
        b.why = format!(
            "the account holds {} orders named {}; set certificate_id = N in its [[certificate]] table to name the one to reissue",
            candidates.len(),
            cert.name
        );
        return Ok(b);
    }
    match adopt::judge(cert, &candidates, now) {
        Existing::Adopt { id, term_end, what } => {
            b.action = "adopt";
            b.order = Some(id);
            b.why = format!(
                "the account's {what} fits; certkeeper does not hold its key, so its first action is a free reissue with a new key of its own"
            );
            if write {
                st.name = cert.name.clone();
                st.certificate_id = Some(id);
                if term_end.is_some() {
                    st.term_end = term_end;
                }
                agent
                    .store
                    .save(&st)
                    .with_context(|| format!("writing the state of {}", cert.name))?;
                b.written = true;
            }
        }
        Existing::Choose(why) => {
            b.action = "choose";
            b.order = None;
            b.why = format!("nothing is bought: {why}");
        }
        Existing::None { .. } if !cert.new_orders => {
            b.action = "refused";
            b.order = None;
            b.why = "the account holds no running order for it, and new_orders = \"deny\" forbids buying one".into();
        }
        Existing::None { .. } => {
            b.action = "create";
            b.order = None;
            b.why = format!(
                "the account holds no running order for it: the first run buys a new {}-month order of {} (paid)",
                cert.lifetime_months, cert.product
            );
        }
    }
    Ok(b)
}

/// The report as two tables: the configured certificates, then the account.
pub(crate) fn table(r: &Report, write: bool) -> String {
    let mut out = format!("{:<28} {:<8} {:<9} {}\n", "CERTIFICATE", "ACTION", "ORDER", "WHY");
    for b in &r.certificates {
        out.push_str(&format!(
            "{:<28} {:<8} {:<9} {}{}\n",
            b.name,
            b.action,
            b.order.map_or("-".into(), |o| o.to_string()),
            b.why,
            if b.written { " (bound now)" } else { "" }
        ));
    }
    let adoptable = r.certificates.iter().filter(|b| b.action == "adopt").count();
    if !write && adoptable > 0 {
        out.push_str(&format!(
            "`certkeeper adopt --write` binds the {adoptable} order(s) marked adopt; the next run reissues them for free\n"
        ));
    }
    out.push_str(&format!(
        "\n{:<9} {:<28} {:<18} {:<10} {:<12} {:<12} {:<28} {}\n",
        "ORDER", "NAME", "PRODUCT", "STATUS", "TERM END", "EXPIRES", "CONFIGURED", "NAMES"
    ));
    let day = |t: &Option<String>| {
        t.as_deref()
            .map_or("-".into(), |t| t.chars().take(10).collect::<String>())
    };
    for o in &r.account {
        out.push_str(&format!(
            "{:<9} {:<28} {:<18} {:<10} {:<12} {:<12} {:<28} {}\n",
            o.id,
            o.name.as_deref().unwrap_or("-"),
            o.product.as_deref().unwrap_or("-"),
            o.status,
            day(&o.term_end),
            day(&o.expires),
            o.configured.as_deref().unwrap_or("-"),
            o.names.join(" ")
        ));
    }
    if r.truncated {
        out.push_str(&format!(
            "(the account holds more than {MAX_LISTED} certificates; the first {MAX_LISTED} by id are listed)\n"
        ));
    }
    out
}
