//! The outbound queue of one bound session: what the core hands to the session's writer.
//!
//! Bounded in stanzas and in bytes, so that nobody can make the server hold more than a known
//! amount for one session. What others send a session ([`Class::Push`]) may fill
//! [`QueueLimits::stanzas`] and [`QueueLimits::bytes`]; a session that lets that much pile up
//! reads too slowly and is closed. What the session's own requests produce (answers to its
//! presence probes, the occupant list of a room it joins, a page of its offline messages) may
//! use [`QueueLimits::reply_bytes`] on top: a burst the session asked for must not cost it the
//! connection, yet it stays bounded.
//!
//! Closing does not take queue space: [`SessionQueue::close`] sets a flag, so a disable, kick
//! or replacement reaches even a session whose queue is full. From then on nothing more is
//! accepted; the writer writes what was queued before the close (an answer that precedes the
//! close, such as the result of an account removal, still reaches the client), then ends the
//! stream. A writer that cannot get that out in time because the peer does not read gives up
//! ([`QueueReceiver::closing_since`]). When the session ends, [`SessionQueue::end`] returns
//! what was still queued, for the core to re-route.
//!
//! Producers never wait: [`SessionQueue::push`] succeeds or fails at once. One consumer, the
//! session's writer, waits in [`QueueReceiver::recv`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use minidom::{Element, Node};
use tokio::sync::Notify;
use tokio::time::Instant;
use xmppd_stream::StreamErrorCondition;

use crate::router::SendError;
use crate::session::Outbound;

/// How much one session's queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Stanzas others may queue for the session.
    pub stanzas: usize,
    /// Bytes others may queue for the session (serialised size, estimated).
    pub bytes: usize,
    /// Bytes the session's own requests may queue beyond `bytes`.
    pub reply_bytes: usize,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            stanzas: 512,
            bytes: 1 << 20,
            reply_bytes: 4 << 20,
        }
    }
}

/// Who caused a stanza to be queued, which decides the budget it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Someone else sent it.
    Push,
    /// It answers the session's own request.
    Reply,
    /// A stored offline message handed out to the session. It stays in storage until written,
    /// so it is dropped, not re-routed, if the session ends first.
    Stored,
}

/// Bookkeeping overhead of one queued item, on top of its serialised size.
const ITEM_OVERHEAD: usize = 64;

struct Item {
    out: Outbound,
    class: Class,
    size: usize,
    /// Counted against the push budget (a reply that did not fit the reply budget).
    in_push: bool,
}

#[derive(Default)]
struct State {
    items: VecDeque<Item>,
    push_count: usize,
    push_bytes: usize,
    reply_bytes: usize,
    close: Option<(StreamErrorCondition, Option<String>)>,
    /// When the close was requested.
    close_at: Option<Instant>,
    /// The writer took the close.
    close_taken: bool,
    /// The session ended: nothing is accepted any more.
    ended: bool,
}

/// One session's outbound queue. Producers hold it through the router; the session's writer
/// holds its [`QueueReceiver`].
pub struct SessionQueue {
    limits: QueueLimits,
    state: Mutex<State>,
    /// Wakes the writer: something was queued, or a close was requested.
    wake: Notify,
}

impl std::fmt::Debug for SessionQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("SessionQueue")
            .field("limits", &self.limits)
            .field("queued", &s.items.len())
            .field("closing", &s.close.is_some())
            .field("ended", &s.ended)
            .finish()
    }
}

impl SessionQueue {
    /// A queue and the receiving end for the session's writer.
    pub fn new(limits: QueueLimits) -> (Arc<SessionQueue>, QueueReceiver) {
        let q = Arc::new(SessionQueue {
            limits,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        (Arc::clone(&q), QueueReceiver(q))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a panic point that leaves the state inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `out` for the writer. `Err(NotFound)` once the session is closing or ended (the
    /// caller treats the resource as gone); `Err(Overflow)` when `class`'s budget is spent
    /// (never for `Outbound::Written`, which takes no budget).
    /// A close (`Outbound::Close`) goes through [`SessionQueue::close`] instead and never
    /// overflows.
    pub fn push(&self, out: Outbound, class: Class) -> Result<(), SendError> {
        if let Outbound::Close(cond, text) = out {
            return if self.close(cond, text) {
                Ok(())
            } else {
                Err(SendError::NotFound)
            };
        }
        let size = outbound_size(&out);
        let limits = self.limits;
        let mut s = self.lock();
        if s.ended || s.close.is_some() {
            return Err(SendError::NotFound);
        }
        if let Outbound::Written = out {
            // Only the core asks for these, one at a time per purpose: they take no budget.
            s.items.push_back(Item {
                out,
                class,
                size: 0,
                in_push: false,
            });
            drop(s);
            self.wake.notify_one();
            return Ok(());
        }
        let fits_push = s.push_count == 0
            || (s.push_count < limits.stanzas && s.push_bytes + size <= limits.bytes);
        let in_push = match class {
            Class::Push => true,
            Class::Reply | Class::Stored => {
                // A single reply larger than the whole budget still goes into an empty one.
                s.reply_bytes + size > limits.reply_bytes && s.reply_bytes > 0
            }
        };
        if in_push {
            if !fits_push {
                return Err(SendError::Overflow);
            }
            s.push_count += 1;
            s.push_bytes += size;
        } else {
            s.reply_bytes += size;
        }
        s.items.push_back(Item {
            out,
            class,
            size,
            in_push,
        });
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Asks the writer to end the stream with `cond`, ahead of anything queued. Returns false
    /// if the session already ended (or was already told to close), so callers can report
    /// truthfully how many sessions they closed.
    pub fn close(&self, cond: StreamErrorCondition, text: Option<String>) -> bool {
        let mut s = self.lock();
        if s.ended || s.close.is_some() {
            return false;
        }
        s.close = Some((cond, text));
        s.close_at = Some(Instant::now());
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Resolves once a close is requested or the queue ended: for the one task that watches
    /// a queue no writer reads (a parked session, see [`crate::detached`]). Cancel-safe.
    pub(crate) async fn closing(&self) {
        loop {
            if self.is_closing() {
                return;
            }
            self.wake.notified().await;
        }
    }

    /// Whether a close was requested or the session ended.
    pub fn is_closing(&self) -> bool {
        let s = self.lock();
        s.ended || s.close.is_some()
    }

    /// Ends the queue: later pushes fail with `NotFound`. Returns what was still queued, in
    /// order, with the class each was queued under.
    pub fn end(&self) -> Vec<(Outbound, Class)> {
        let mut s = self.lock();
        s.ended = true;
        s.push_count = 0;
        s.push_bytes = 0;
        s.reply_bytes = 0;
        let items = std::mem::take(&mut s.items);
        drop(s);
        self.wake.notify_one();
        items.into_iter().map(|i| (i.out, i.class)).collect()
    }

    /// Stanzas and bytes queued right now, for tests and diagnostics: (count, bytes).
    pub fn queued(&self) -> (usize, usize) {
        let s = self.lock();
        (s.items.len(), s.push_bytes + s.reply_bytes)
    }

    /// Puts stanzas the writer took but could not write (the peer stopped reading, or the
    /// connection broke) back in front, in order, so that the end of the session re-routes
    /// them with the rest.
    pub fn give_back(&self, items: Vec<(Outbound, Class)>) {
        let mut s = self.lock();
        if s.ended {
            tracing::debug!(
                count = items.len(),
                "unwritten stanzas after the session ended"
            );
            return;
        }
        for (out, class) in items.into_iter().rev() {
            let size = outbound_size(&out);
            s.reply_bytes += size;
            s.items.push_front(Item {
                out,
                class,
                size,
                in_push: false,
            });
        }
    }

    fn take_close(s: &mut State) -> Option<(Outbound, Class)> {
        let (cond, text) = s.close.as_ref().filter(|_| !s.close_taken)?;
        let close = Outbound::Close(*cond, text.clone());
        s.close_taken = true;
        Some((close, Class::Push))
    }

    fn pop(&self) -> Option<(Outbound, Class)> {
        let mut s = self.lock();
        if s.close_taken {
            return None;
        }
        let Some(item) = s.items.pop_front() else {
            return Self::take_close(&mut s);
        };
        if item.in_push {
            s.push_count -= 1;
            s.push_bytes -= item.size;
        } else {
            s.reply_bytes -= item.size;
        }
        Some((item.out, item.class))
    }
}

/// The session writer's end of a [`SessionQueue`].
#[derive(Debug)]
pub struct QueueReceiver(Arc<SessionQueue>);

impl QueueReceiver {
    /// The next thing to write, with the budget it was queued under: a requested close comes
    /// after what was queued before it, and nothing follows it. Waits while the queue is empty.
    /// Cancel-safe.
    pub async fn recv(&self) -> (Outbound, Class) {
        loop {
            if let Some(out) = self.0.pop() {
                return out;
            }
            self.0.wake.notified().await;
        }
    }

    /// The next thing to write, if there is one right now.
    pub fn try_recv(&self) -> Option<(Outbound, Class)> {
        self.0.pop()
    }

    /// Resolves once a close is requested (at once if it already was), with the time it was:
    /// lets the writer give up writing to a peer that does not read. Cancel-safe.
    pub async fn closing_since(&self) -> Instant {
        loop {
            if let Some(at) = self.0.lock().close_at {
                return at;
            }
            self.0.wake.notified().await;
        }
    }

    /// Takes the requested close ahead of whatever is still queued (the writer gave up on it).
    pub fn take_close(&self) -> Option<Outbound> {
        SessionQueue::take_close(&mut self.0.lock()).map(|(close, _)| close)
    }

    /// The queue itself.
    pub fn queue(&self) -> &Arc<SessionQueue> {
        &self.0
    }
}

fn outbound_size(out: &Outbound) -> usize {
    ITEM_OVERHEAD
        + match out {
            Outbound::Stanza(el) | Outbound::Addressed(el, _) => element_size(el),
            Outbound::Written | Outbound::Close(..) => 0,
        }
}

/// The serialised size of `el`, estimated from its names, attributes and text without
/// serialising it: the cost of escaping is left out.
pub fn element_size(el: &Element) -> usize {
    let name = el.name().len();
    // `<name` `>` `</name>`, or `<name/>`; a namespace declaration when it has one. Reading an
    // element's namespace copies it, so only the usual one is measured; any other counts as
    // `NS_ESTIMATE` bytes.
    const NS_ESTIMATE: usize = 32;
    let ns = if el.has_ns(crate::stanza::NS_CLIENT) {
        crate::stanza::NS_CLIENT.len()
    } else {
        NS_ESTIMATE
    };
    let mut n = 2 * name + 5 + ns + 9;
    for ((_, k), v) in el.attrs().iter() {
        n += k.len() + v.len() + 4;
    }
    for node in el.nodes() {
        n += match node {
            Node::Element(child) => element_size(child),
            Node::Text(t) => t.len(),
        };
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(body_len: usize) -> Outbound {
        let mut m = Element::bare("message", "jabber:client");
        m.append_child(crate::stanza::text_elem(
            "body",
            "jabber:client",
            &"x".repeat(body_len),
        ));
        Outbound::Stanza(Arc::new(m))
    }

    fn limits(stanzas: usize, bytes: usize, reply_bytes: usize) -> QueueLimits {
        QueueLimits {
            stanzas,
            bytes,
            reply_bytes,
        }
    }

    #[test]
    fn pushes_are_bounded_in_bytes_as_well_as_in_stanzas() {
        let (q, rx) = SessionQueue::new(limits(100, 10_000, 0));
        // Three 4 KiB messages do not fit 10 000 bytes, though 3 is far below 100 stanzas.
        assert_eq!(q.push(msg(4000), Class::Push), Ok(()));
        assert_eq!(q.push(msg(4000), Class::Push), Ok(()));
        assert_eq!(q.push(msg(4000), Class::Push), Err(SendError::Overflow));
        // Written out, the space is free again.
        assert!(rx.try_recv().is_some());
        assert_eq!(q.push(msg(4000), Class::Push), Ok(()));
        let (count, bytes) = q.queued();
        assert_eq!(count, 2);
        assert!((8000..10_000).contains(&bytes), "{bytes}");

        let (q, _rx) = SessionQueue::new(limits(2, 1 << 20, 0));
        assert_eq!(q.push(msg(1), Class::Push), Ok(()));
        assert_eq!(q.push(msg(1), Class::Push), Ok(()));
        assert_eq!(q.push(msg(1), Class::Push), Err(SendError::Overflow));
    }

    #[test]
    fn an_empty_queue_takes_one_stanza_larger_than_its_budget() {
        let (q, _rx) = SessionQueue::new(limits(8, 1000, 0));
        assert_eq!(q.push(msg(5000), Class::Push), Ok(()));
        assert_eq!(q.push(msg(10), Class::Push), Err(SendError::Overflow));
    }

    #[test]
    fn replies_use_their_own_budget_then_the_push_budget() {
        let (q, rx) = SessionQueue::new(limits(2, 10_000, 40_000));
        // Far more replies than `stanzas` allows: they answer the session's own request.
        for _ in 0..100 {
            assert_eq!(q.push(msg(100), Class::Reply), Ok(()));
        }
        // Others' pushes still have their whole budget.
        assert_eq!(q.push(msg(100), Class::Push), Ok(()));
        assert_eq!(q.push(msg(100), Class::Push), Ok(()));
        assert_eq!(q.push(msg(100), Class::Push), Err(SendError::Overflow));
        // Beyond the reply budget, replies compete for the push budget (full here).
        for _ in 0..100 {
            let _ = q.push(msg(100), Class::Stored);
        }
        assert_eq!(q.push(msg(100), Class::Reply), Err(SendError::Overflow));
        let mut n = 0;
        while rx.try_recv().is_some() {
            n += 1;
        }
        assert!(n > 102, "{n}");
        assert_eq!(q.queued(), (0, 0), "every budget is released when written");
    }

    #[tokio::test]
    async fn close_needs_no_space_and_follows_what_was_queued() {
        let (q, rx) = SessionQueue::new(limits(1, 1000, 0));
        assert_eq!(q.push(msg(10), Class::Push), Ok(()));
        assert_eq!(q.push(msg(10), Class::Push), Err(SendError::Overflow));
        assert!(q.close(StreamErrorCondition::NotAuthorized, Some("disabled".into())));
        assert!(
            !q.close(StreamErrorCondition::Conflict, None),
            "already closing"
        );
        assert_eq!(q.push(msg(10), Class::Push), Err(SendError::NotFound));
        rx.closing_since().await;
        assert!(matches!(rx.recv().await.0, Outbound::Stanza(_)));
        match rx.recv().await.0 {
            Outbound::Close(StreamErrorCondition::NotAuthorized, Some(t)) => {
                assert_eq!(t, "disabled")
            }
            other => panic!("{other:?}"),
        }
        assert!(rx.try_recv().is_none(), "nothing after the close");
        assert!(q.end().is_empty());
        assert!(!q.close(StreamErrorCondition::Conflict, None), "ended");
        q.give_back(vec![(msg(1), Class::Push)]);
        assert!(rx.try_recv().is_none(), "nothing comes back once ended");
        assert_eq!(q.push(msg(10), Class::Reply), Err(SendError::NotFound));
    }

    #[test]
    fn a_writer_giving_up_takes_the_close_and_leaves_the_rest() {
        let (q, rx) = SessionQueue::new(QueueLimits::default());
        q.push(msg(10), Class::Push).unwrap();
        assert!(rx.take_close().is_none(), "no close requested");
        assert!(q.close(StreamErrorCondition::Conflict, None));
        assert!(matches!(rx.take_close(), Some(Outbound::Close(..))));
        assert!(rx.try_recv().is_none());
        assert_eq!(q.end().len(), 1, "left for re-routing");
    }

    #[test]
    fn unwritten_stanzas_go_back_in_front_in_order() {
        let (q, rx) = SessionQueue::new(QueueLimits::default());
        let body = |o: &Outbound| {
            o.to_element()
                .and_then(|e| e.get_child("body", "jabber:client").map(|b| b.text().len()))
        };
        q.push(msg(3), Class::Push).unwrap();
        assert!(q.close(StreamErrorCondition::Conflict, None));
        q.give_back(vec![(msg(1), Class::Reply), (msg(2), Class::Stored)]);
        let left: Vec<_> = q.end().iter().map(|(o, c)| (body(o), *c)).collect();
        assert_eq!(
            left,
            [
                (Some(1), Class::Reply),
                (Some(2), Class::Stored),
                (Some(3), Class::Push)
            ]
        );
        drop(rx);
    }

    #[tokio::test]
    async fn recv_waits_for_a_push() {
        let (q, rx) = SessionQueue::new(QueueLimits::default());
        let waiter = tokio::spawn(async move { rx.recv().await });
        tokio::task::yield_now().await;
        q.push(msg(3), Class::Push).unwrap();
        assert!(matches!(
            waiter.await.unwrap(),
            (Outbound::Stanza(_), Class::Push)
        ));
    }

    #[test]
    fn size_estimate_tracks_the_serialised_size() {
        let mut m = Element::bare("message", "jabber:client");
        crate::stanza::set_attr(&mut m, "to", "juliet@example.org/balcony");
        m.append_child(crate::stanza::text_elem(
            "body",
            "jabber:client",
            &"y".repeat(1000),
        ));
        let mut out = Vec::new();
        xmppd_stream::serialize(&m, "", &mut out);
        let est = element_size(&m);
        assert!(
            est >= out.len() && est < out.len() + 64,
            "{est} vs {}",
            out.len()
        );
    }
}
