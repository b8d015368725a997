//! What is in flight per registration, so that an app server is not flooded and one that
//! keeps failing is let go. Pure state, no I/O: the module asks it what to do.
//!
//! - At most one notification per registration is unanswered at a time. Messages that come
//!   meanwhile are counted, and the count goes out in one more notification once the app
//!   server took the first: a burst of messages costs the app server two publishes, and the
//!   phone still learns of the last one.
//! - An answer is matched by its id and must come from the registration's app server.
//! - Failures in a row are counted (an answer that says "perhaps later", or no answer within
//!   the timeout, noticed when the next message needs one); at `max_errors` the registration
//!   goes. A final answer (the node is gone, we may not publish) removes it at once.

use std::collections::HashMap;

use jid::BareJid;

use crate::payload::{Answer, Summary};

/// One registration: the account, the app server's JID and the node.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Key {
    pub owner: BareJid,
    pub jid: String,
    pub node: String,
}

#[derive(Debug, Default)]
struct Delivery {
    /// The id of the unanswered notification and when it was sent (ms).
    outstanding: Option<(String, i64)>,
    /// What came while it was unanswered.
    pending: Option<Summary>,
    /// Failures in a row.
    errors: u32,
}

/// What to do about a message for a registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Publish this summary under this id.
    Send(String, Summary),
    /// Wait: one is unanswered; this message goes with the next.
    Coalesced,
    /// Too many failures: remove the registration.
    Remove,
}

/// What follows an app server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAnswer {
    Done,
    /// Publish what came meanwhile.
    Send(String, Summary),
    Remove,
}

/// Notifications in flight, for every registration.
#[derive(Debug)]
pub struct Tracker {
    deliveries: HashMap<Key, Delivery>,
    inflight: HashMap<String, Key>,
    max_errors: u32,
    timeout_ms: i64,
}

impl Tracker {
    pub fn new(max_errors: u32, timeout_ms: i64) -> Tracker {
        Tracker {
            deliveries: HashMap::new(),
            inflight: HashMap::new(),
            max_errors: max_errors.max(1),
            timeout_ms,
        }
    }

    /// A message worth a notification reached `key` at `now`; `summary` is its own (one
    /// message). `id` makes the id of a new notification.
    pub fn message(
        &mut self,
        key: &Key,
        summary: Summary,
        now: i64,
        id: impl FnOnce() -> String,
    ) -> Decision {
        let d = self.deliveries.entry(key.clone()).or_default();
        let messages = summary.messages + d.pending.as_ref().map_or(0, |p| p.messages);
        let summary = Summary {
            messages,
            ..summary
        };
        if let Some((old, sent)) = &d.outstanding {
            if now.saturating_sub(*sent) < self.timeout_ms {
                d.pending = Some(summary);
                return Decision::Coalesced;
            }
            // No answer in time: a failure, and the late answer will not be matched.
            self.inflight.remove(old);
            d.outstanding = None;
            d.errors += 1;
            if d.errors >= self.max_errors {
                self.forget(key);
                return Decision::Remove;
            }
        }
        let id = id();
        d.outstanding = Some((id.clone(), now));
        d.pending = None;
        self.inflight.insert(id.clone(), key.clone());
        Decision::Send(id, summary)
    }

    /// The registration an answer with this id, from `from` to `to`, is for; `None` when it
    /// answers nothing we sent (or comes from elsewhere).
    pub fn matches(&self, id: &str, from: &str, to: &BareJid) -> Option<&Key> {
        let key = self.inflight.get(id)?;
        let from_service = key.jid == from
            || from
                .split_once('/')
                .is_some_and(|(bare, _)| key.jid == bare);
        (from_service && key.owner == *to).then_some(key)
    }

    /// The answer of the notification `id` (already [`Tracker::matches`]ed).
    pub fn answered(
        &mut self,
        id: &str,
        answer: Answer,
        now: i64,
        next_id: impl FnOnce() -> String,
    ) -> AfterAnswer {
        let Some(key) = self.inflight.remove(id) else {
            return AfterAnswer::Done;
        };
        let Some(d) = self.deliveries.get_mut(&key) else {
            return AfterAnswer::Done;
        };
        d.outstanding = None;
        match answer {
            Answer::Gone => {
                self.forget(&key);
                AfterAnswer::Remove
            }
            Answer::Failed => {
                d.errors += 1;
                if d.errors >= self.max_errors {
                    self.forget(&key);
                    return AfterAnswer::Remove;
                }
                // What is pending goes with the next message: an app server in trouble is
                // not asked again at once.
                AfterAnswer::Done
            }
            Answer::Taken => {
                d.errors = 0;
                match d.pending.take() {
                    Some(summary) => {
                        let id = next_id();
                        d.outstanding = Some((id.clone(), now));
                        self.inflight.insert(id.clone(), key);
                        AfterAnswer::Send(id, summary)
                    }
                    None => {
                        self.deliveries.remove(&key);
                        AfterAnswer::Done
                    }
                }
            }
        }
    }

    /// Forgets `key` (disabled, enabled anew, removed).
    pub fn forget(&mut self, key: &Key) {
        if let Some(d) = self.deliveries.remove(key) {
            if let Some((id, _)) = d.outstanding {
                self.inflight.remove(&id);
            }
        }
    }

    /// Forgets every registration of `owner` that `which` selects.
    pub fn forget_where(&mut self, which: impl Fn(&Key) -> bool) {
        let keys: Vec<Key> = self
            .deliveries
            .keys()
            .filter(|k| which(k))
            .cloned()
            .collect();
        for k in &keys {
            self.forget(k);
        }
    }

    /// Registrations with something in flight or counted (for tests and bounds).
    pub fn len(&self) -> usize {
        self.deliveries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(node: &str) -> Key {
        Key {
            owner: BareJid::new("romeo@x").unwrap(),
            jid: "push.example".into(),
            node: node.into(),
        }
    }

    fn one(sender: &str) -> Summary {
        Summary {
            messages: 1,
            last_sender: Some(sender.into()),
            last_body: None,
        }
    }

    fn ids() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("p{n}")
        }
    }

    const T: i64 = 60_000;

    #[test]
    fn one_unanswered_at_a_time_then_what_came_meanwhile() {
        let (mut t, mut id, k) = (Tracker::new(3, T), ids(), key("n"));
        assert_eq!(
            t.message(&k, one("a"), 0, &mut id),
            Decision::Send("p1".into(), one("a"))
        );
        assert_eq!(t.message(&k, one("b"), 1, &mut id), Decision::Coalesced);
        assert_eq!(t.message(&k, one("c"), 2, &mut id), Decision::Coalesced);
        let romeo = BareJid::new("romeo@x").unwrap();
        assert!(t.matches("p1", "evil.example", &romeo).is_none());
        assert!(t
            .matches("p1", "push.example", &BareJid::new("juliet@x").unwrap())
            .is_none());
        assert_eq!(t.matches("p1", "push.example", &romeo), Some(&k));
        let follow = Summary {
            messages: 2,
            ..one("c")
        };
        assert_eq!(
            t.answered("p1", Answer::Taken, 3, &mut id),
            AfterAnswer::Send("p2".into(), follow)
        );
        assert_eq!(
            t.answered("p2", Answer::Taken, 4, &mut id),
            AfterAnswer::Done
        );
        assert!(t.is_empty());
        // An answer to nothing in flight does nothing.
        assert_eq!(
            t.answered("p2", Answer::Gone, 5, &mut id),
            AfterAnswer::Done
        );
    }

    #[test]
    fn failures_in_a_row_remove_a_success_resets_them() {
        let (mut t, mut id, k) = (Tracker::new(3, T), ids(), key("n"));
        for round in 0..2 {
            let Decision::Send(p, _) = t.message(&k, one("a"), round, &mut id) else {
                panic!()
            };
            assert_eq!(
                t.answered(&p, Answer::Failed, round, &mut id),
                AfterAnswer::Done
            );
        }
        let Decision::Send(p, _) = t.message(&k, one("a"), 2, &mut id) else {
            panic!()
        };
        assert_eq!(t.answered(&p, Answer::Taken, 2, &mut id), AfterAnswer::Done);
        for round in 3..5 {
            let Decision::Send(p, _) = t.message(&k, one("a"), round, &mut id) else {
                panic!()
            };
            assert_eq!(
                t.answered(&p, Answer::Failed, round, &mut id),
                AfterAnswer::Done
            );
        }
        let Decision::Send(p, _) = t.message(&k, one("a"), 5, &mut id) else {
            panic!()
        };
        assert_eq!(
            t.answered(&p, Answer::Failed, 5, &mut id),
            AfterAnswer::Remove
        );
        assert!(t.is_empty());
    }

    #[test]
    fn a_final_answer_removes_at_once_and_silence_counts_as_failure() {
        let (mut t, mut id, k) = (Tracker::new(2, T), ids(), key("n"));
        let Decision::Send(p, _) = t.message(&k, one("a"), 0, &mut id) else {
            panic!()
        };
        assert_eq!(
            t.answered(&p, Answer::Gone, 1, &mut id),
            AfterAnswer::Remove
        );

        let other = key("m");
        let Decision::Send(p1, _) = t.message(&other, one("a"), 0, &mut id) else {
            panic!()
        };
        // Unanswered past the timeout: a new one goes, the old id is no longer matched.
        let Decision::Send(_, s) = t.message(&other, one("b"), T, &mut id) else {
            panic!()
        };
        assert_eq!(s.messages, 1);
        assert!(t.matches(&p1, "push.example", &other.owner).is_none());
        assert_eq!(
            t.message(&other, one("c"), 2 * T, &mut id),
            Decision::Remove
        );
        assert!(t.is_empty());
    }

    #[test]
    fn forgetting_drops_what_is_in_flight() {
        let (mut t, mut id) = (Tracker::new(3, T), ids());
        let Decision::Send(p, _) = t.message(&key("n"), one("a"), 0, &mut id) else {
            panic!()
        };
        t.message(&key("m"), one("a"), 0, &mut id);
        t.forget_where(|k| k.node == "n");
        assert!(t.matches(&p, "push.example", &key("n").owner).is_none());
        assert_eq!(t.len(), 1);
    }
}
