//! The poll queue, one per API user: a message per ended job (more under the poll faults),
//! polled and confirmed one at a time.
//!
//! With `foreign_poll`, a foreign message goes before each of ours: alternately one about
//! another client's job (another ctid) and a system notice without a job. It stays at the head
//! of the queue until its owner confirms it, `foreign_poll_hold` later; our client may confirm
//! it first (the API lets it), which is counted in [`Stats::foreign_confirmed`](super::Stats).

use std::time::Instant;

use serde_json::{Value, json};

use super::{ApiError, JobRec, PollRec, Reply, Result, State};
use crate::time::{format as ts, now};
use crate::wire::{BasicUser, NotifyMessage, PollMessage, ResponseObject};

impl State {
    /// `GET /poll`: the oldest unconfirmed message of the user, with the queue's length.
    pub fn poll(&mut self, owner: &BasicUser) -> Reply {
        self.expire_foreign();
        let mine: Vec<&PollRec> = self.poll.iter().filter(|p| &p.owner == owner).collect();
        let r = Reply::success("S0905", "The notification was polled successfully.");
        match mine.first() {
            Some(p) => {
                let mut r = r.object("message", p.id).data([&p.message]);
                if let Some(o) = r.object.as_mut() {
                    o.summary = Some(mine.len() as i64);
                }
                r
            }
            None => {
                let mut r = r.object("message", "");
                if let Some(o) = r.object.as_mut() {
                    o.summary = Some(0);
                }
                r
            }
        }
    }

    /// `PUT /poll/{id}`: confirms a message, whoever's it is about; answers how many are left.
    pub fn poll_confirm(&mut self, owner: &BasicUser, id: i64) -> Result<Reply> {
        self.expire_foreign();
        let pos = self
            .poll
            .iter()
            .position(|p| p.id == id && &p.owner == owner)
            .ok_or_else(|| ApiError::not_found("0906", "message", "message", id))?;
        let gone = self.poll.remove(pos);
        self.stats.poll_confirmed += 1;
        if gone.foreign_until.is_some() {
            self.stats.foreign_confirmed += 1;
        }
        let left = self.poll.iter().filter(|p| &p.owner == owner).count() as i64;
        let mut r = Reply::success("S0906", "The notification was confirmed successfully.").object("message", id);
        if let Some(o) = r.object.as_mut() {
            o.summary = Some(left);
        }
        Ok(r)
    }

    /// Foreign messages whose owner has confirmed them by now leave the queue.
    fn expire_foreign(&mut self) {
        let now = Instant::now();
        self.poll.retain(|p| p.foreign_until.is_none_or(|t| t > now));
    }

    /// Queues the message about job `j` (twice with `duplicate_poll`), after a foreign one with
    /// `foreign_poll`.
    pub(super) fn notify(&mut self, j: &JobRec) {
        if self.faults.foreign_poll {
            let m = self.foreign_message(j);
            let until = Instant::now() + self.faults.foreign_poll_hold;
            self.enqueue(m, j.owner.clone(), Some(until));
        }
        let m = self.poll_message(j);
        self.enqueue(m.clone(), j.owner.clone(), None);
        if self.faults.duplicate_poll {
            let mut dup = m;
            dup.id = self.next_poll;
            self.next_poll += 1;
            self.enqueue(dup, j.owner.clone(), None);
        }
    }

    fn enqueue(&mut self, message: PollMessage, owner: BasicUser, foreign_until: Option<Instant>) {
        self.poll.push(PollRec {
            id: message.id,
            owner,
            message,
            foreign_until,
        });
    }

    /// The message about job `j`: the job (with `type: "ssl"`), the ctid of the request that
    /// started it at the top level, and the certificate in `object.data`.
    fn poll_message(&mut self, j: &JobRec) -> PollMessage {
        let id = self.next_poll;
        self.next_poll += 1;
        let stid = self.stid();
        let data = match self.certs.get(&j.cert_id) {
            Some(c) => serde_json::to_value(self.cert_view(c)).unwrap_or(Value::Null),
            None => json!({ "id": j.cert_id }),
        };
        PollMessage {
            id,
            owner: j.owner.clone(),
            job: Some(self.job_view(j, true)),
            notify: None,
            stid,
            ctid: j.ctid.clone(),
            messages: j.messages.clone(),
            notice: None,
            created: ts(now()),
            object: Some(ResponseObject {
                kind: "Certificate".into(),
                value: Some(j.name.clone()),
                summary: None,
                data: Some(data),
            }),
        }
    }

    /// A message that is not our client's: alternately about another client's job (with its
    /// ctid) and a system notice without a job.
    fn foreign_message(&mut self, ours: &JobRec) -> PollMessage {
        self.foreign_made += 1;
        let n = self.foreign_made;
        if n % 2 == 1 {
            let mut other = ours.clone();
            other.id = ours.id + 900_000_000;
            other.cert_id = -1;
            other.name = format!("foreign-{n}.example.org");
            other.ctid = Some(format!("foreign-{}", ours.id));
            let mut m = self.poll_message(&other);
            if let Some(o) = m.object.as_mut() {
                o.data = Some(json!({
                    "id": 9_000_000 + n,
                    "orderId": format!("{}", 8_000_000 + n),
                    "name": other.name,
                    "product": other.product,
                }));
            }
            m
        } else {
            let id = self.next_poll;
            self.next_poll += 1;
            PollMessage {
                id,
                owner: ours.owner.clone(),
                job: None,
                notify: Some(NotifyMessage {
                    kind: "NOTICE".into(),
                    object: ResponseObject {
                        kind: "Notice".into(),
                        value: Some(format!("maintenance-{n}")),
                        summary: None,
                        data: None,
                    },
                }),
                stid: self.stid(),
                ctid: None,
                messages: Vec::new(),
                notice: Some("Scheduled maintenance of the SSL Manager: orders may be delayed.".into()),
                created: ts(now()),
                object: None,
            }
        }
    }
}
