//! Request ids (XEP-0124 §14): requests are handled in `rid` order whatever order they arrive
//! in, within a window; a repeated `rid` gets the answer it already got (§14.3); a client
//! with more requests open than `requests` allows is overactive (§11).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What to do with a request that just arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arrival {
    /// The next in order: handle it now (then whatever [`Rids::take_ready`] gives).
    Next,
    /// Ahead of a missing one, within the window: keep it until the gap is filled.
    Ahead,
    /// Answered already: the same answer again (§14.3).
    Repeat(Arc<str>),
    /// Seen and not answered yet: the new request waits for that answer in its place.
    Pending,
    /// Outside the window, or answered so long ago that the answer is forgotten:
    /// `item-not-found` (§14.1, §14.3).
    NotFound,
    /// More requests open than `requests` allows: `policy-violation` (§11).
    Overactive,
}

/// The request ids of one session.
#[derive(Debug)]
pub struct Rids {
    /// The next rid to handle in order.
    next: u64,
    /// Requests may be this far ahead of `next` (exclusive).
    window: u64,
    /// Requests open at once, at most (the `requests` attribute of the session).
    requests: usize,
    /// Handled and not answered yet.
    open: BTreeSet<u64>,
    /// Arrived ahead of `next`.
    ahead: BTreeSet<u64>,
    /// Recent answers, for repeated requests.
    answers: BTreeMap<u64, Arc<str>>,
}

impl Rids {
    /// After the session creation request `first`, which is handled and open. A request may
    /// come `requests` ahead of the next one expected, one more when it ends the session
    /// (§11 allows an extra request for that).
    pub fn new(first: u64, requests: usize) -> Rids {
        Rids {
            next: first.saturating_add(1),
            window: requests as u64 + 1,
            requests,
            open: BTreeSet::from([first]),
            ahead: BTreeSet::new(),
            answers: BTreeMap::new(),
        }
    }

    /// Sorts a request that arrived; `ends` when it terminates the session (allowed beyond
    /// `requests`).
    pub fn arrive(&mut self, rid: u64, ends: bool) -> Arrival {
        if rid < self.next {
            if self.open.contains(&rid) {
                return Arrival::Pending;
            }
            return match self.answers.get(&rid) {
                Some(answer) => Arrival::Repeat(answer.clone()),
                None => Arrival::NotFound,
            };
        }
        if self.ahead.contains(&rid) {
            return Arrival::Pending;
        }
        if rid - self.next >= self.window {
            return Arrival::NotFound;
        }
        if self.open.len() + self.ahead.len() >= self.requests && !ends {
            return Arrival::Overactive;
        }
        if rid == self.next {
            self.next += 1;
            self.open.insert(rid);
            Arrival::Next
        } else {
            self.ahead.insert(rid);
            Arrival::Ahead
        }
    }

    /// The request kept ahead that is now next, if any: it is to be handled now.
    pub fn take_ready(&mut self) -> Option<u64> {
        let rid = self.next;
        self.ahead.remove(&rid).then(|| {
            self.next += 1;
            self.open.insert(rid);
            rid
        })
    }

    /// `rid` was answered with `answer`; kept while the client may still repeat it.
    pub fn answered(&mut self, rid: u64, answer: Arc<str>) {
        self.open.remove(&rid);
        self.answers.insert(rid, answer);
        let oldest = self.next.saturating_sub(self.window);
        self.answers = self.answers.split_off(&oldest);
    }

    /// Whether `rid` was handled and is not answered yet.
    pub fn is_open(&self, rid: u64) -> bool {
        self.open.contains(&rid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn requests_are_handled_in_order_whatever_order_they_arrive_in() {
        // hold 1, requests 2: the creation request 100 is open.
        let mut rids = Rids::new(100, 2);
        rids.answered(100, answer("features"));
        assert_eq!(rids.arrive(102, false), Arrival::Ahead);
        assert_eq!(rids.take_ready(), None);
        assert_eq!(rids.arrive(101, false), Arrival::Next);
        assert_eq!(rids.take_ready(), Some(102));
        assert_eq!(rids.take_ready(), None);
        assert!(rids.is_open(101) && rids.is_open(102));
        // Arriving again while open or ahead: wait for the same answer.
        assert_eq!(rids.arrive(101, false), Arrival::Pending);
        assert_eq!(rids.arrive(104, true), Arrival::Ahead);
        assert_eq!(rids.arrive(104, true), Arrival::Pending);
    }

    #[test]
    fn a_repeated_rid_gets_the_same_answer_while_it_is_kept() {
        let mut rids = Rids::new(1, 2);
        rids.answered(1, answer("one"));
        assert_eq!(rids.arrive(1, false), Arrival::Repeat(answer("one")));
        for rid in 2..=10 {
            assert_eq!(rids.arrive(rid, false), Arrival::Next);
            rids.answered(rid, answer(&rid.to_string()));
        }
        assert_eq!(rids.arrive(9, false), Arrival::Repeat(answer("9")));
        // Older than the window: forgotten.
        assert_eq!(rids.arrive(2, false), Arrival::NotFound);
        assert_eq!(rids.arrive(0, false), Arrival::NotFound);
    }

    #[test]
    fn a_rid_beyond_the_window_is_not_found() {
        let mut rids = Rids::new(10, 2);
        rids.answered(10, answer(""));
        // next is 11; the window is 3: 11, 12 and 13.
        assert_eq!(rids.arrive(14, false), Arrival::NotFound);
        assert_eq!(rids.arrive(u64::MAX, false), Arrival::NotFound);
        assert_eq!(rids.arrive(13, false), Arrival::Ahead);
    }

    #[test]
    fn more_open_requests_than_allowed_is_overactive_unless_it_ends_the_session() {
        let mut rids = Rids::new(1, 2);
        rids.answered(1, answer(""));
        assert_eq!(rids.arrive(2, false), Arrival::Next);
        assert_eq!(rids.arrive(4, false), Arrival::Ahead);
        // 2 is held and 4 waits for 3: a third open request is one too many…
        assert_eq!(rids.arrive(3, false), Arrival::Overactive);
        // …unless it terminates the session.
        assert_eq!(rids.arrive(3, true), Arrival::Next);
        assert_eq!(rids.take_ready(), Some(4));
        // Answers free the places.
        for rid in 2..=4 {
            rids.answered(rid, answer(""));
        }
        assert_eq!(rids.arrive(5, false), Arrival::Next);
        assert_eq!(rids.arrive(6, false), Arrival::Next);
    }
}
