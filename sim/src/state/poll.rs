//! The poll queue: one message per finished job (more under the poll faults), polled and
//! confirmed one at a time per account.

use super::{ApiError, JobRec, PollRec, Reply, Result, State};
use crate::time::{format as ts, now};
use crate::wire::{BasicUser, PollMessage, ResponseObject};

impl State {
    pub fn poll(&self, owner: &BasicUser) -> Reply {
        let mine: Vec<&PollRec> = self.poll.iter().filter(|p| &p.owner == owner).collect();
        let mut r = Reply::success("S0905", "The notification was polled successfully.");
        match mine.first() {
            Some(p) => {
                r.object = Some(ResponseObject {
                    kind: "message".into(),
                    value: p.id.to_string(),
                    summary: Some(mine.len() as i64),
                    data: None,
                });
                r.data([&p.message])
            }
            None => {
                r.object = Some(ResponseObject {
                    kind: "message".into(),
                    value: String::new(),
                    summary: Some(0),
                    data: None,
                });
                r
            }
        }
    }

    pub fn poll_confirm(&mut self, owner: &BasicUser, id: i64) -> Result<Reply> {
        let pos = self
            .poll
            .iter()
            .position(|p| p.id == id && &p.owner == owner)
            .ok_or_else(|| ApiError::not_found("0906", "message", id))?;
        self.poll.remove(pos);
        Ok(Reply::success("S0906", "The notification was confirmed successfully.").object("message", id))
    }

    pub(super) fn enqueue(&mut self, message: PollMessage, owner: BasicUser) {
        self.poll.push(PollRec {
            id: message.id,
            owner,
            message,
        });
    }

    pub(super) fn poll_message(&mut self, j: &JobRec) -> PollMessage {
        let id = self.next_poll;
        self.next_poll += 1;
        let stid = self.stid();
        PollMessage {
            id,
            owner: j.owner.clone(),
            job: Self::job_view(j),
            stid,
            ctid: j.ctid.clone(),
            messages: j.messages.clone(),
            created: ts(now()),
            object: ResponseObject {
                kind: "Certificate".into(),
                value: j.name.clone(),
                summary: None,
                data: Some(self.cert_summary(j.cert_id)),
            },
        }
    }
}
