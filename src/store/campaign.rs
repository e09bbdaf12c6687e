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
    /// The names of `failed`, for a look-up without a search.
    failed_names: HashSet<String>,
    /// The API requests the runner had sent at the last line, and the certificates ended in that
    /// runner's process by then, so that a viewer can tell the cost of one.
    pub requests: Option<u64>,
}

impl CampaignLog {
    /// Whether `name` has ended (done or failed).
    pub fn ended(&self, name: &str) -> bool {
        self.done.contains(name) || self.failed_names.contains(name)
    }

    /// Whether `name` failed (and was not done later).
    pub fn failed(&self, name: &str) -> bool {
        self.failed_names.contains(name) && !self.done.contains(name)
    }

    /// How many have ended.
    pub fn ended_count(&self) -> usize {
        self.done.len() + self.failed_names.iter().filter(|n| !self.done.contains(*n)).count()
    }

    /// Records a failure.
    pub fn fail(&mut self, name: &str, error: String) {
        self.failed_names.insert(name.to_string());
        self.failed.push((name.to_string(), error));
    }

    /// Reads a log's text. Only whole lines count: a line a crash cut short (no newline yet),
    /// or one that does not read, is skipped.
    pub fn parse(text: &str) -> Self {
        let mut log = Self::default();
        log.read_more(text);
        log
    }

    /// Reads more of the log (whole lines only); returns how many bytes it used.
    pub fn read_more(&mut self, text: &str) -> usize {
        let whole = text.rfind('\n').map_or(0, |i| i + 1);
        for line in text[..whole].lines() {
            let mut parts = line.splitn(4, '\t');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some("start"), Some(name), Some(at), _) => {
                    if let Ok(at) = at.parse() {
                        self.started.insert(name.to_string(), at);
                    }
                }
                (Some("done"), Some(name), requests, _) => {
                    self.done.insert(name.to_string());
                    self.requests = requests.and_then(|r| r.parse().ok()).or(self.requests);
                }
                (Some("failed"), Some(name), requests, text) => {
                    self.fail(name, text.unwrap_or_default().to_string());
                    self.requests = requests.and_then(|r| r.parse().ok()).or(self.requests);
                }
                // From a later version: skipped.
                _ => {}
            }
        }
        whole
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
        // The log is written before the plan and renamed away after it: a plan without its
        // log is not a campaign that has done nothing.
        let log = read_bounded(&self.state_dir.join(LOG))?.ok_or_else(|| {
            io::Error::other(format!(
                "{} has no {LOG} beside it; move it away to start anew",
                self.state_dir.join(PLAN).display()
            ))
        })?;
        Ok(Some((campaign, CampaignLog::parse(&log))))
    }

    /// The campaign's log from byte `offset` on (also once it is over and renamed), for a
    /// viewer that follows it.
    pub fn campaign_log_from(&self, offset: u64) -> io::Result<String> {
        use std::io::Seek as _;
        for name in [LOG, "campaign-last.log"] {
            match OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(self.state_dir.join(name))
            {
                Ok(mut f) => {
                    f.seek(io::SeekFrom::Start(offset))?;
                    let mut text = String::new();
                    f.take(MAX_FILE).read_to_string(&mut text)?;
                    return Ok(text);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(String::new())
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
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(self.state_dir.join(LOG))?;
        // A line a crash cut short is ended first, so that it never swallows this one.
        let len = f.metadata()?.len();
        let mut last = [0u8];
        if len > 0 {
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut last, len - 1)?;
        }
        let text = if len > 0 && last[0] != b'\n' {
            format!("\n{line}")
        } else {
            line
        };
        f.write_all(text.as_bytes())?;
        f.sync_data()
    }

    /// The campaign is over: its files become `campaign-last.*`.
    pub fn end_campaign(&self) -> io::Result<()> {
        // The plan first: killed in between, no campaign is left (a log without its plan is
        // replaced by the next campaign's).
        std::fs::rename(self.state_dir.join(PLAN), self.state_dir.join("campaign-last.json"))?;
        std::fs::rename(self.state_dir.join(LOG), self.state_dir.join("campaign-last.log"))?;
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
    f.take(MAX_FILE + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE {
        return Err(io::Error::other(format!(
            "{} is over {} MiB",
            path.display(),
            MAX_FILE >> 20
        )));
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_read_back_and_a_torn_last_line_is_skipped() {
        let log = CampaignLog::parse(
            "start\ta.example.com\t100\ndone\ta.example.com\t7\nstart\tb.example.com\t101\nfailed\tb.example.com\t12\tthe API refused it\nstart\tc.example.com\t10\n",
        );
        assert!(log.ended("a.example.com") && log.ended("b.example.com"));
        assert!(!log.ended("c.example.com"));
        assert!(log.failed("b.example.com") && !log.failed("a.example.com"));
        assert_eq!(log.started.get("c.example.com"), Some(&10));
        assert_eq!(
            log.failed,
            [("b.example.com".to_string(), "the API refused it".to_string())]
        );
        assert_eq!(log.requests, Some(12));
        assert_eq!(log.ended_count(), 2);
        let torn = CampaignLog::parse("start\ta.example.com\t100\ndo");
        assert!(torn.done.is_empty() && torn.started.len() == 1);
        // A start cut short is no start (not one at time 0), nor is one that does not read.
        let torn = CampaignLog::parse("start\ta.example.com\t100\nstart\tb.example.com\t17");
        assert!(!torn.started.contains_key("b.example.com"));
        assert!(CampaignLog::parse("start\tb.example.com\t1x\n").started.is_empty());
    }

    /// A line a crash cut short is ended before the next is appended, and a plan whose log is
    /// gone is refused rather than read as a campaign that did nothing.
    #[test]
    fn a_torn_line_never_swallows_the_next_and_a_plan_needs_its_log() {
        let dir = std::env::temp_dir().join(format!("certkeeper-campaign-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::new(&dir, &dir.join("live"), 3);
        let plan = Campaign {
            id: "c1".into(),
            started: 1,
            selection: "every certificate".into(),
            names: vec!["a.example.com".into(), "b.example.com".into()],
        };
        store.begin_campaign(&plan).unwrap();
        std::fs::write(dir.join(LOG), "start\ta.example.com\t1").unwrap();
        store
            .log_campaign(CampaignEvent::Start {
                name: "b.example.com",
                at: 5,
            })
            .unwrap();
        let (_, log) = store.campaign().unwrap().unwrap();
        assert_eq!(log.started.get("b.example.com"), Some(&5));
        std::fs::remove_file(dir.join(LOG)).unwrap();
        let e = store.campaign().unwrap_err();
        assert!(e.to_string().contains("has no campaign.log beside it"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
