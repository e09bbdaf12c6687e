//! Reissues asked for through the control socket (`certkeeper --renew-now` while the daemon
//! runs): the names waiting to start, the tasks started for them, and who waits for whose
//! results.

use std::collections::HashSet;

use crate::control;
use crate::run::Exit;

/// Reissues asked for through the control socket: the names waiting to start, the tasks
/// started for them, and who waits for which names' results.
#[derive(Default)]
pub(super) struct Forced {
    /// In the order asked; `waiting` holds the same names, for a look-up without a search.
    pending: Vec<String>,
    waiting: HashSet<String>,
    tasks: HashSet<tokio::task::Id>,
    waiters: Vec<Waiter>,
}

struct Waiter {
    names: HashSet<String>,
    exit: Exit,
    reply: tokio::sync::mpsc::UnboundedSender<control::Reply>,
}

impl Forced {
    pub(super) fn ask(&mut self, names: Vec<String>, reply: tokio::sync::mpsc::UnboundedSender<control::Reply>) {
        for n in &names {
            if self.waiting.insert(n.clone()) {
                self.pending.push(n.clone());
            }
        }
        self.waiters.push(Waiter {
            names: names.into_iter().collect(),
            exit: Exit::Ok,
            reply,
        });
    }

    /// The names to start now, in the order asked: at most `room` of them (what
    /// `order.concurrency` leaves beside the orders in flight), none that is in flight. They are
    /// taken off the pending list; the rest wait for a task to end. Unbounded, a reissue of
    /// every certificate through the control socket started one order per certificate at once.
    pub(super) fn startable(&mut self, in_flight: &HashSet<String>, room: usize) -> Vec<String> {
        let mut start = Vec::new();
        self.pending.retain(|n| {
            if start.len() < room && !in_flight.contains(n) {
                start.push(n.clone());
                false
            } else {
                true
            }
        });
        for n in &start {
            self.waiting.remove(n);
        }
        start
    }

    pub(super) fn started(&mut self, id: tokio::task::Id) {
        self.tasks.insert(id);
    }

    pub(super) fn was_forced(&mut self, id: tokio::task::Id) -> bool {
        self.tasks.remove(&id)
    }

    pub(super) fn is_waiting(&self, name: &str) -> bool {
        self.waiting.contains(name)
    }

    /// A forced run of `name` ended: each waiter for it hears the line, and those with nothing
    /// left to wait for the end.
    pub(super) fn ended(&mut self, name: &str, exit: Exit, line: String) {
        self.waiters.retain_mut(|w| {
            if !w.names.remove(name) {
                return true;
            }
            w.exit = w.exit.worst(exit);
            let _ = w.reply.send(control::Reply::Done {
                name: name.to_string(),
                exit,
                line: line.clone(),
            });
            if w.names.is_empty() {
                let _ = w.reply.send(control::Reply::End(w.exit));
                return false;
            }
            // A client that went away waits for nothing.
            !w.reply.is_closed()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forced_reissues_start_in_the_order_asked_and_no_more_than_there_is_room_for() {
        let mut forced = Forced::default();
        let (reply, _rx) = tokio::sync::mpsc::unbounded_channel();
        forced.ask(["a", "b", "c", "d", "b"].map(String::from).to_vec(), reply);
        let in_flight: HashSet<String> = ["b".to_string()].into();
        assert_eq!(
            forced.startable(&in_flight, 2),
            ["a", "c"],
            "b is in flight, the room is 2"
        );
        assert!(forced.is_waiting("b") && forced.is_waiting("d") && !forced.is_waiting("a"));
        assert!(forced.startable(&in_flight, 0).is_empty(), "no room");
        assert_eq!(forced.startable(&HashSet::new(), 8), ["b", "d"]);
        assert!(!forced.is_waiting("b") && !forced.is_waiting("d"));
    }
}
