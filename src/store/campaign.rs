//! A mass reissue (`--renew-now --all`, a name pattern, `--issued-before`), as the state
//! directory keeps it, so that it survives a kill or a reboot:
//!
//! - `state_dir/campaign.json` (0600): its id, when it began, what it selected, and the names in
//!   the order they are reissued (urgent first), written once;
//! - `state_dir/campaign.log` (0600): one line per event, appended and fsynced: `start NAME
//!   UNIX` before a certificate's reissue begins, `done NAME REQUESTS` and `failed NAME
//!   REQUESTS TEXT` when it ends (REQUESTS: the API requests the runner had sent by then).
//!
//! When it is over, both are renamed to `campaign-last.json` and `campaign-last.log`.

use std::collections::{HashMap, HashSet};
use std::fs::OpenOptions;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt;

use serde::{Deserialize, Serialize};

use super::Store;
use super::fs::{sync_dir, write_atomic};

const PLAN: &str = "campaign.json";
const LOG: &str = "campaign.log";
/// The largest campaign files read: a name is at most 250 bytes, and a line of the log at most
/// a few hundred more; 100,000 certificates fit.
const MAX_FILE: u64 = 256 << 20;

/// What a campaign is to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Campaign {
    pub id: String,
    /// When it began, unix time.
    pub started: i64,
    /// What selected its certificates, in words (`every certificate`, `'*.example.com'`, ...).
    pub selection: String,
    /// Its certificates, in the order they are reissued.
    pub names: Vec<String>,
}

/// What its log says so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CampaignLog {
    /// The certificates whose reissue began, and when (the last start).
    pub started: HashMap<String, i64>,
    pub done: HashSet<String>,
    /// Each failure, in the order they came.
    pub failed: Vec<(String, String)>,
    /// The API requests the runner had sent at the last line, and the certificates ended in that
    /// runner's process by then, so that a viewer can tell the cost of one.
    pub requests: Option<u64>,
}

impl CampaignLog {
    /// Whether `name` has ended (done or failed).
    pub fn ended(&self, name: &str) -> bool {
        self.done.contains(name) || self.failed.iter().any(|(n, _)| n == name)
    }

    /// How many have ended.
    pub fn ended_count(&self) -> usize {
        let failed: HashSet<&str> = self.failed.iter().map(|(n, _)| n.as_str()).collect();
        self.done.len() + failed.iter().filter(|n| !self.done.contains(**n)).count()
    }

    /// Reads a log's text; a line cut short by a crash is skipped.
    pub fn parse(text: &str) -> Self {
        let mut log = Self::default();
        for line in text.lines() {
            let mut parts = line.splitn(4, '\t');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("start"), Some(name), Some(at), _) => {
                    log.started.insert(name.to_string(), at.parse().unwrap_or(0));
                }
                (Some("done"), Some(name), requests, _) => {
                    log.done.insert(name.to_string());
                    log.requests = requests.and_then(|r| r.parse().ok()).or(log.requests);
                }
                (Some("failed"), Some(name), requests, text) => {
                    log.failed
                        .push((name.to_string(), text.unwrap_or_default().to_string()));
                    log.requests = requests.and_then(|r| r.parse().ok()).or(log.requests);
                }
                // A line cut short by a crash, or from a later version: skipped.
                _ => {}
            }
        }
        log
    }
}

/// One line of the log.
pub enum CampaignEvent<'a> {
    Start {
        name: &'a str,
        at: i64,
    },
    Done {
        name: &'a str,
        requests: u64,
    },
    Failed {
        name: &'a str,
        requests: u64,
        error: &'a str,
    },
}

impl Store {
    /// The campaign in progress, if any, with its log.
    pub fn campaign(&self) -> io::Result<Option<(Campaign, CampaignLog)>> {
        let Some(plan) = read_bounded(&self.state_dir.join(PLAN))? else {
            return Ok(None);
        };
        let campaign: Campaign = serde_json::from_str(&plan)
            .map_err(|e| io::Error::other(format!("{}: {e}", self.state_dir.join(PLAN).display())))?;
        let log = read_bounded(&self.state_dir.join(LOG))?.unwrap_or_default();
        Ok(Some((campaign, CampaignLog::parse(&log))))
    }

    /// Records a new campaign (with an empty log).
    pub fn begin_campaign(&self, campaign: &Campaign) -> io::Result<()> {
        let text = serde_json::to_vec(campaign).map_err(io::Error::other)?;
        write_atomic(&self.state_dir.join(LOG), b"", 0o600)?;
        write_atomic(&self.state_dir.join(PLAN), &text, 0o600)
    }

    /// Appends one event to the log, durably.
    pub fn log_campaign(&self, event: CampaignEvent<'_>) -> io::Result<()> {
        let line = match event {
            CampaignEvent::Start { name, at } => format!("start\t{name}\t{at}\n"),
            CampaignEvent::Done { name, requests } => format!("done\t{name}\t{requests}\n"),
            CampaignEvent::Failed { name, requests, error } => {
                let error: String = error
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .take(500)
                    .collect();
                format!("failed\t{name}\t{requests}\t{error}\n")
            }
        };
        let mut f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.state_dir.join(LOG))?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }

    /// The campaign is over: its files become `campaign-last.*`.
    pub fn end_campaign(&self) -> io::Result<()> {
        std::fs::rename(self.state_dir.join(LOG), self.state_dir.join("campaign-last.log"))?;
        std::fs::rename(self.state_dir.join(PLAN), self.state_dir.join("campaign-last.json"))?;
        sync_dir(&self.state_dir)
    }
}

fn read_bounded(path: &std::path::Path) -> io::Result<Option<String>> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    f.take(MAX_FILE).read_to_string(&mut text)?;
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_read_back_and_a_torn_last_line_is_skipped() {
        let log = CampaignLog::parse(
            "start\ta.example.com\t100\ndone\ta.example.com\t7\nstart\tb.example.com\t101\nfailed\tb.example.com\t12\tthe API refused it\nstart\tc.example.com\t10",
        );
        assert!(log.ended("a.example.com") && log.ended("b.example.com"));
        assert!(!log.ended("c.example.com"));
        assert_eq!(log.started.get("c.example.com"), Some(&10));
        assert_eq!(
            log.failed,
            [("b.example.com".to_string(), "the API refused it".to_string())]
        );
        assert_eq!(log.requests, Some(12));
        assert_eq!(log.ended_count(), 2);
        let torn = CampaignLog::parse("start\ta.example.com\t100\ndo");
        assert!(torn.done.is_empty() && torn.started.len() == 1);
    }
}
