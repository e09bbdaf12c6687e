//! The daemon's share of a campaign (`crate::campaign`): its certificates started in the room
//! the due orders and served checks leave, those that wait for a task of the daemon's own, and
//! its end.

use std::collections::HashSet;

use crate::campaign::{Ended, record};
use crate::order::Agent;
use crate::store::{Campaign, CampaignLog};

/// A campaign the daemon works through, beside its other work.
pub(super) struct InDaemon {
    pub(super) campaign: Campaign,
    log: CampaignLog,
    queue: std::collections::VecDeque<String>,
    /// Certificates whose paid request's answer is being looked for: tried again a minute on.
    waiting: Vec<String>,
    retry_at: i64,
    pub(super) tasks: HashSet<tokio::task::Id>,
}

impl InDaemon {
    /// The campaign in progress in the state directory, if any.
    pub(super) fn load(agent: &Agent) -> Option<Self> {
        match agent.store.campaign() {
            Ok(Some((campaign, log))) => {
                tracing::info!(campaign = %campaign.id, selection = %campaign.selection, ended = log.ended_count(), total = campaign.names.len(), "a campaign is in progress; going on with it");
                let queue = campaign.names.iter().filter(|n| !log.ended(n)).cloned().collect();
                Some(Self {
                    campaign,
                    log,
                    queue,
                    waiting: Vec::new(),
                    retry_at: 0,
                    tasks: HashSet::new(),
                })
            }
            Ok(None) => None,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the campaign's files");
                None
            }
        }
    }

    /// The next certificates to start, at most `room`, none in flight, with their logged starts.
    pub(super) fn startable(&mut self, room: usize, busy: impl Fn(&str) -> bool, t: i64) -> Vec<(String, Option<i64>)> {
        if self.queue.is_empty() && !self.waiting.is_empty() && t >= self.retry_at {
            self.queue.extend(self.waiting.drain(..));
        }
        let mut out = Vec::new();
        let mut skipped = Vec::new();
        while out.len() < room {
            let Some(name) = self.queue.pop_front() else { break };
            if busy(&name) {
                skipped.push(name);
            } else {
                let started = self.log.started.get(&name).copied();
                // Its start, as its task logs it: looked at again (a lost answer, a task of the
                // daemon's own in between), it is not taken for one never begun.
                self.log.started.entry(name.clone()).or_insert(t);
                out.push((name, started));
            }
        }
        // In flight for another reason: tried once that ends.
        self.waiting.extend(skipped);
        if !self.waiting.is_empty() && self.retry_at <= t {
            self.retry_at = t + 60;
        }
        out
    }

    /// An order task of the daemon's own ended for `name`: a campaign certificate that waited for
    /// it counts as reissued when it deployed, and is looked at again at once otherwise.
    pub(super) fn other_task_ended(&mut self, agent: &Agent, name: &str, deployed: bool) {
        let Some(at) = self.waiting.iter().position(|n| n == name) else {
            return;
        };
        let name = self.waiting.remove(at);
        if deployed {
            let ended = Ok(format!("{name}: reissued"));
            record(agent, &name, &ended);
            self.log.done.insert(name);
        } else {
            self.queue.push_front(name);
        }
    }

    /// A certificate of the campaign ended (`None`: it waits for a lost answer).
    pub(super) fn ended(&mut self, name: &str, ended: Ended, t: i64) {
        match ended {
            Some(Ok(_)) => {
                self.log.done.insert(name.to_string());
            }
            Some(Err(e)) => self.log.fail(name, e),
            None => {
                self.waiting.push(name.to_string());
                self.retry_at = t + 60;
            }
        }
    }

    /// Whether everything has ended.
    pub(super) fn over(&self) -> bool {
        self.queue.is_empty() && self.waiting.is_empty() && self.tasks.is_empty()
    }

    /// When the daemon should look at the campaign again (waiting certificates), if ever.
    pub(super) fn next(&self) -> Option<i64> {
        (!self.waiting.is_empty()).then_some(self.retry_at)
    }

    /// The summary, for the log.
    pub(super) fn summary(&self) -> String {
        format!(
            "campaign {} ended: {} of {} reissued, {} failed",
            self.campaign.id,
            self.log.done.len(),
            self.campaign.names.len(),
            self.log.failed.len()
        )
    }
}
