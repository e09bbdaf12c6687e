//! A mass reissue: `certkeeper --renew-now --all`, `--renew-now --match '*.example.com'`,
//! `--renew-now --all --issued-before 2026-07-01` (what a CA incident or a leaked key names).
//!
//! The certificates selected (only those with a certificate installed: a campaign reissues, it
//! never buys) are recorded in the state directory, urgent (nearest expiry) first
//! (`store::Campaign`), and worked through `order.concurrency` at a time within the API's rate
//! limit. Before a certificate's reissue begins, its start is logged; when it ends, its result.
//! Killed, or the host rebooted, the same command (or a daemon at its start) goes on with it:
//! a certificate whose order is in flight resumes it, one whose start was logged and that was
//! deployed (or failed) since counts as ended, the others are reissued, so each is reissued
//! once. On a terminal a live line shows the progress (done / total, failures, the time left
//! from the rate limit); elsewhere, plain lines. `status` shows a campaign in progress.

use std::collections::HashSet;
use std::io::{IsTerminal, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use crate::config::CertConfig;
use crate::order::{Agent, Outcome};
use crate::run::{Exit, Refusal, say};
use crate::store::{Campaign, CampaignEvent, CampaignLog, CertState};

/// What selects a campaign's certificates.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selection {
    /// Name patterns (`*` any run of characters, `?` one), matched against every name of a
    /// certificate; none: every certificate.
    pub patterns: Vec<String>,
    /// Only certificates whose installed one was issued (notBefore) before this, unix time.
    pub issued_before: Option<i64>,
}

impl Selection {
    fn describe(&self) -> String {
        let mut what = if self.patterns.is_empty() {
            "every certificate".to_string()
        } else {
            format!("the certificates matching {}", self.patterns.join(", "))
        };
        if let Some(t) = self.issued_before {
            what.push_str(&format!(" issued before {}", crate::text::time(t)));
        }
        what
    }

    fn picks(&self, cert: &CertConfig, st: &CertState) -> bool {
        let named = self.picks_name(cert);
        let issued = st.serial.is_some() && st.generation.is_some();
        let before = self
            .issued_before
            .is_none_or(|t| st.not_before.is_some_and(|nb| nb < t));
        named && issued && before
    }
}

/// `*` and `?` as in a shell, nothing else special.
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

/// The campaign in progress, or a new one of `selection`, recorded in the state directory.
/// Says what it is; a campaign already in progress goes on (whatever `selection` says).
pub(crate) fn begin(agent: &Agent, selection: &Selection) -> Result<(Campaign, CampaignLog), Refusal> {
    let fail = |e: std::io::Error| Refusal::new(Exit::Error, format!("the campaign's files: {e}"));
    if let Some((c, log)) = agent.store.campaign().map_err(fail)? {
        say(&format!(
            "campaign {} ({}) is in progress since {}: {} of {} ended; going on with it",
            c.id,
            c.selection,
            crate::text::time(c.started),
            log.ended_count(),
            c.names.len()
        ));
        return Ok((c, log));
    }
    let mut picked: Vec<(i64, String)> = Vec::new();
    let mut not_issued = 0;
    for cert in &agent.config.certificates {
        let st = agent.store.load(&cert.name).unwrap_or_default();
        if selection.picks(cert, &st) {
            picked.push((st.not_after.unwrap_or(i64::MAX), cert.name.clone()));
        } else if st.serial.is_none() && selection.picks_name(cert) {
            not_issued += 1;
        }
    }
    // Urgent first: the nearest expiry.
    picked.sort();
    let campaign = Campaign {
        id: format!("c{}", crate::order::random_hex(6)),
        started: OffsetDateTime::now_utc().unix_timestamp(),
        selection: selection.describe(),
        names: picked.into_iter().map(|(_, n)| n).collect(),
    };
    if campaign.names.is_empty() {
        return Err(Refusal::new(
            Exit::Config,
            format!(
                "no installed certificate is {}",
                campaign.selection.replacen("the certificates ", "", 1)
            ),
        ));
    }
    agent.store.begin_campaign(&campaign).map_err(fail)?;
    let left_out = match not_issued {
        0 => String::new(),
        n => format!(" ({n} not issued yet left out: a campaign reissues, it never buys)"),
    };
    say(&format!(
        "campaign {}: reissuing {} certificates, {}, urgent first{left_out}",
        campaign.id,
        campaign.names.len(),
        campaign.selection
    ));
    Ok((campaign, CampaignLog::default()))
}

impl Selection {
    /// Whether a name of `cert` matches (every certificate without patterns).
    fn picks_name(&self, cert: &CertConfig) -> bool {
        self.patterns.is_empty()
            || self
                .patterns
                .iter()
                .any(|p| cert.all_names().iter().any(|n| glob(&p.to_ascii_lowercase(), n)))
    }
}

/// How one certificate of a campaign ended: `None` when it did not (a paid request's answer
/// is being looked for: the campaign goes on with it next time).
pub(crate) type Ended = Option<Result<String, String>>;

/// Works on one certificate of the campaign: resumes its order, counts a reissue that ended
/// since its logged start, or logs the start and reissues it.
pub(crate) async fn work(agent: &Agent, cert: &CertConfig, started: Option<i64>) -> (Ended, anyhow::Result<Outcome>) {
    let name = &cert.name;
    let st = agent.store.load(name).unwrap_or_default();
    if let Some(t) = started
        && st.order.is_none()
    {
        if st.deployed && st.last_success.is_some_and(|s| s >= t) {
            let line = format!("{name}: deployed serial {}", st.serial.as_deref().unwrap_or("-"));
            return (Some(Ok(line)), Ok(Outcome::NothingDue));
        }
        if st.last_failure.is_some_and(|f| f >= t) {
            let e = st.last_error.clone().unwrap_or_else(|| "it failed".into());
            return (Some(Err(format!("{name}: FAILED: {e}"))), Ok(Outcome::NothingDue));
        }
    }
    let force = st.order.is_none();
    let at = OffsetDateTime::now_utc().unix_timestamp();
    if let Err(e) = agent.store.log_campaign(CampaignEvent::Start { name, at }) {
        let line = format!("{name}: FAILED: cannot write the campaign's log: {e}");
        return (
            Some(Err(line)),
            Err(anyhow::anyhow!("cannot write the campaign's log: {e}")),
        );
    }
    let result = Box::pin(agent.ensure(cert, force)).await;
    let (exit, line) = crate::run::outcome_line(name, &result);
    let ended = match (&result, exit) {
        // Under way: a lost answer being reconciled, an order waiting for its approval mail.
        (Ok(Outcome::Unsettled { .. } | Outcome::AwaitingApproval { .. }), _) => None,
        (_, Exit::Ok) => Some(Ok(line)),
        _ => Some(Err(line)),
    };
    (ended, result)
}

/// Logs how a certificate ended.
pub(crate) fn record(agent: &Agent, name: &str, ended: &Result<String, String>) {
    let requests = agent.client.requests();
    let event = match ended {
        Ok(_) => CampaignEvent::Done { name, requests },
        Err(e) => CampaignEvent::Failed {
            name,
            requests,
            error: e,
        },
    };
    if let Err(e) = agent.store.log_campaign(event) {
        tracing::error!(cert = %name, error = %e, "cannot write the campaign's log");
    }
}

/// The API requests one reissue is taken to cost before any has ended: prepareOrder, the
/// reissue, the poll message and its confirmation, the download.
const COST_GUESS: f64 = 5.0;

/// The campaign's progress as shown: a live line on a terminal, plain lines elsewhere.
pub(crate) struct Progress {
    total: usize,
    ended: usize,
    failed: usize,
    /// Ended in this process, and the requests counted at its start, for the cost of one.
    ended_here: usize,
    requests_at_start: u64,
    rate: f64,
    live: bool,
    last_plain: Instant,
    began: Instant,
}

impl Progress {
    pub(crate) fn new(campaign: &Campaign, log: &CampaignLog, requests_now: u64, rate: f64) -> Self {
        Self {
            total: campaign.names.len(),
            ended: log.ended_count(),
            failed: log.failed.len(),
            ended_here: 0,
            requests_at_start: requests_now,
            rate,
            live: std::io::stdout().is_terminal(),
            last_plain: Instant::now(),
            began: Instant::now(),
        }
    }

    /// The time left, from the rate limit and what one reissue costs so far.
    fn left(&self, requests_now: u64) -> Duration {
        let cost = if self.ended_here == 0 {
            COST_GUESS
        } else {
            requests_now.saturating_sub(self.requests_at_start) as f64 / self.ended_here as f64
        };
        let remaining = self.total.saturating_sub(self.ended) as f64;
        Duration::from_secs((remaining * cost / self.rate.max(0.001)).ceil() as u64)
    }

    fn line(&self, requests_now: u64) -> String {
        let mut line = format!("campaign: {}/{} done, {} failed", self.ended, self.total, self.failed);
        if self.ended < self.total {
            line.push_str(&format!(
                ", about {} left",
                crate::text::duration(self.left(requests_now))
            ));
        }
        line
    }

    /// One certificate ended: its line (failures always; on a terminal, successes only in the
    /// live line), then the progress.
    pub(crate) fn ended(&mut self, ended: &Result<String, String>, requests_now: u64) {
        self.ended += 1;
        self.ended_here += 1;
        if ended.is_err() {
            self.failed += 1;
        }
        let text = match ended {
            Ok(l) | Err(l) => l,
        };
        if self.live {
            if ended.is_err() {
                self.print(&format!("\r\x1b[2K{text}\n"));
            }
            self.print(&format!("\r\x1b[2K{}", self.line(requests_now)));
        } else {
            say(text);
            // A plain progress line every 10 certificates or 30 s, and at the end.
            if self.ended_here.is_multiple_of(10)
                || self.last_plain.elapsed() >= Duration::from_secs(30)
                || self.ended == self.total
            {
                self.last_plain = Instant::now();
                say(&self.line(requests_now));
            }
        }
    }

    /// Shows the progress once, at the start.
    pub(crate) fn show(&self, requests_now: u64) {
        if self.live {
            self.print(&format!("\r\x1b[2K{}", self.line(requests_now)));
        } else {
            say(&self.line(requests_now));
        }
    }

    /// The summary at the end.
    pub(crate) fn summary(&self, campaign: &Campaign, log_failed: &[(String, String)], waiting: usize) -> String {
        let mut s = String::new();
        if self.live {
            s.push_str("\r\x1b[2K");
        }
        s.push_str(&format!(
            "campaign {}: {} of {} reissued, {} failed",
            campaign.id,
            self.ended - self.failed,
            self.total,
            self.failed
        ));
        if waiting > 0 {
            s.push_str(&format!(
                ", {waiting} waiting for a lost answer to be settled (the same command goes on with them)"
            ));
        }
        s.push_str(&format!(", this run {}", crate::text::duration(self.began.elapsed())));
        if !log_failed.is_empty() {
            let names: HashSet<&str> = log_failed.iter().map(|(n, _)| n.as_str()).collect();
            let mut names: Vec<&str> = names.into_iter().collect();
            names.sort_unstable();
            s.push_str(&format!(
                "; to try the failed ones again: certkeeper --renew-now {}",
                names.join(" ")
            ));
        }
        s
    }

    fn print(&self, s: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes()).and_then(|()| out.flush());
    }
}

/// Runs the campaign in this process (the lock held): the certificates not ended yet,
/// `order.concurrency` at a time, then the summary. Exit: the most serious outcome.
pub(crate) async fn run(agent: &Arc<Agent>, campaign: Campaign, log: CampaignLog) -> Exit {
    let mut progress = Progress::new(&campaign, &log, agent.client.requests(), agent.client.rate());
    progress.show(agent.client.requests());
    let by_name: std::collections::HashMap<&str, &CertConfig> =
        agent.config.certificates.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut queue = campaign
        .names
        .iter()
        .filter(|n| !log.ended(n))
        .cloned()
        .collect::<Vec<_>>()
        .into_iter();
    let mut tasks = tokio::task::JoinSet::new();
    let mut exit = Exit::Ok;
    let mut waiting = 0;
    let mut failed: Vec<(String, String)> = log.failed.clone();
    let limit = agent.config.order.concurrency.max(1);
    loop {
        while tasks.len() < limit {
            let Some(name) = queue.next() else { break };
            let started = log.started.get(&name).copied();
            match by_name.get(name.as_str()) {
                Some(cert) => {
                    let (agent, cert) = (agent.clone(), (*cert).clone());
                    tasks.spawn(async move {
                        let (ended, result) = work(&agent, &cert, started).await;
                        tell(&agent, &cert, &result).await;
                        (
                            cert.name.clone(),
                            ended,
                            crate::run::outcome_line(&cert.name, &result).0,
                        )
                    });
                }
                None => {
                    let ended = Err(format!("{name}: no longer configured; nothing was done"));
                    record(agent, &name, &ended);
                    failed.push((name.clone(), String::new()));
                    progress.ended(&ended, agent.client.requests());
                    exit = exit.worst(Exit::Config);
                }
            }
        }
        let Some(joined) = tasks.join_next().await else { break };
        let Ok((name, ended, code)) = joined else {
            exit = exit.worst(Exit::Error);
            continue;
        };
        // A certificate found failed since its logged start (by a run that was killed) fails
        // this run too.
        let code = match (&ended, code) {
            (Some(Err(_)), Exit::Ok) => Exit::OrderFailed,
            (_, code) => code,
        };
        exit = exit.worst(code);
        match ended {
            Some(ended) => {
                record(agent, &name, &ended);
                if ended.is_err() {
                    failed.push((name.clone(), String::new()));
                }
                progress.ended(&ended, agent.client.requests());
            }
            None => waiting += 1,
        }
    }
    if waiting == 0
        && let Err(e) = agent.store.end_campaign()
    {
        tracing::error!(error = %e, "cannot close the campaign's files");
    }
    say(&progress.summary(&campaign, &failed, waiting));
    exit
}

/// `on_failure` hears of a campaign's failures as of a run's.
async fn tell(agent: &Agent, cert: &CertConfig, result: &anyhow::Result<Outcome>) {
    match result {
        Ok(Outcome::NotDeployed { error, not_served, .. }) => {
            let event = if *not_served { "not_served" } else { "not_deployed" };
            crate::run::tell_on_failure(agent, cert, event, error, 0).await
        }
        Ok(Outcome::Waiting { newly: true, message }) => {
            crate::run::tell_on_failure(agent, cert, "consent_needed", message, 0).await
        }
        Ok(Outcome::AwaitingApproval { newly: true, message }) => {
            crate::run::tell_on_failure(agent, cert, "awaiting_approval", message, 0).await
        }
        Err(e) => crate::run::tell_on_failure(agent, cert, "failed", &format!("{e:#}"), 0).await,
        _ => {}
    }
}

/// Follows a campaign a daemon runs: its progress from the campaign's log (read on from where
/// it was, once a second), until it is over (or the daemon stops). Exit 3 when a certificate
/// failed, else 0.
pub(crate) async fn follow(agent: &Agent) -> Result<Exit, Refusal> {
    let fail = |e: std::io::Error| Refusal::new(Exit::Error, format!("the campaign's files: {e}"));
    let Some((campaign, _)) = agent.store.campaign().map_err(fail)? else {
        return Ok(Exit::Ok);
    };
    let mut seen = CampaignLog::default();
    let mut offset = 0u64;
    let mut progress: Option<Progress> = None;
    let mut last_alive = Instant::now();
    loop {
        let over = !agent.store.state_dir.join("campaign.json").exists();
        let text = agent.store.campaign_log_from(offset).map_err(fail)?;
        let mut more = seen.clone();
        offset += more.read_more(&text) as u64;
        if progress.is_none() {
            let p = Progress::new(&campaign, &more, more.requests.unwrap_or(0), agent.client.rate());
            p.show(more.requests.unwrap_or(0));
            seen = more.clone();
            progress = Some(p);
        }
        let Some(p) = progress.as_mut() else { continue };
        for name in &campaign.names {
            if more.ended(name) && !seen.ended(name) {
                let ended = match more.failed.iter().find(|(n, _)| n == name) {
                    Some((_, e)) if more.failed(name) => Err(format!("{name}: FAILED: {e}")),
                    _ => Ok(format!("{name}: reissued")),
                };
                p.ended(&ended, more.requests.unwrap_or(0));
            }
        }
        seen = more;
        if over {
            say(&p.summary(&campaign, &seen.failed, 0));
            return Ok(if seen.failed.is_empty() {
                Exit::Ok
            } else {
                Exit::OrderFailed
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // The daemon may have stopped: then the lock is free.
        if last_alive.elapsed() >= Duration::from_secs(5) {
            last_alive = Instant::now();
            if let Ok(lock) = agent.store.lock() {
                drop(lock);
                return Err(Refusal::new(
                    Exit::Error,
                    "the daemon stopped before the campaign ended; it goes on at the daemon's next start, or with the same command".into(),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_in_a_shell() {
        assert!(glob("*.example.com", "www.example.com"));
        assert!(glob("*.example.com", "a.b.example.com"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("shop?.example.com", "shop1.example.com"));
        assert!(!glob("shop?.example.com", "shop12.example.com"));
        assert!(glob("*", "anything"));
        assert!(glob("www.example.com", "www.example.com"));
        assert!(!glob("www.example.com", "www.example.net"));
        assert!(glob("*example*", "www.example.net"));
    }
}
