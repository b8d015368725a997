//! The session registry: which resources of which account are bound here, with their priority,
//! availability, last presence and outbound queue.
//!
//! [`Router`] is a trait so that a clustered implementation can keep one account's resources on
//! several nodes; [`LocalRouter`] is the single-process one. It is a sharded map (no global lock
//! on the hot path): a lookup locks only the shard of one bare JID, for the time of a clone.

use std::sync::Arc;

use dashmap::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_stream::StreamErrorCondition;

use crate::queue::{Class, SessionQueue};
use crate::session::{Outbound, SharedPresence};

/// One bound resource as the registry knows it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub jid: FullJid,
    /// Unique per bound session; distinguishes a replaced session from its successor.
    pub session_id: u64,
    /// The session's outbound queue; [`SessionQueue::close`] ends the session.
    pub queue: Arc<SessionQueue>,
    /// Has sent initial presence and not gone unavailable since.
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast (answers probes).
    pub presence: Option<Arc<Element>>,
    /// Requested the roster (receives roster pushes).
    pub interested: bool,
    /// The session's presence state, which a successor for the same resource ends.
    pub(crate) presence_state: SharedPresence,
}

impl Resource {
    /// A freshly bound resource: not yet available, priority 0, no roster interest.
    pub fn new(jid: FullJid, session_id: u64, queue: Arc<SessionQueue>) -> Self {
        Resource {
            jid,
            session_id,
            queue,
            available: false,
            priority: 0,
            presence: None,
            interested: false,
            presence_state: SharedPresence::default(),
        }
    }
}

/// Resources that receive a message of `kind` sent to their bare JID (RFC 6121 §8.5.2.1).
///
/// `normal` and `chat` go to the available resources of highest non-negative priority — all of
/// them when several share it; `headline` to every available resource with non-negative
/// priority; `groupchat` and anything else to none.
pub fn message_targets(resources: &[Resource], kind: &str) -> Vec<FullJid> {
    let eligible = resources.iter().filter(|r| r.available && r.priority >= 0);
    match kind {
        "normal" | "chat" | "error" => {
            let Some(top) = eligible.clone().map(|r| r.priority).max() else {
                return Vec::new();
            };
            eligible
                .filter(|r| r.priority == top)
                .map(|r| r.jid.clone())
                .collect()
        }
        "headline" => eligible.map(|r| r.jid.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Why a stanza could not be queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such resource is bound.
    NotFound,
    /// Its queue is full: it reads too slowly and is being disconnected.
    Overflow,
}

/// The session registry.
pub trait Router: Send + Sync {
    /// Registers a resource; returns the one it replaces (same full JID), if any.
    fn insert(&self, res: Resource) -> Option<Resource>;
    /// Unregisters `jid` if it is still the session `session_id`.
    fn remove(&self, jid: &FullJid, session_id: u64) -> Option<Resource>;
    /// Applies `f` to the resource `jid` if it is the session `session_id`.
    fn update(&self, jid: &FullJid, session_id: u64, f: &mut dyn FnMut(&mut Resource));
    /// All resources of an account (empty when none).
    fn resources(&self, bare: &BareJid) -> Vec<Resource>;
    /// Number of resources bound for an account.
    fn resource_count(&self, bare: &BareJid) -> usize;
    /// Queues `out` for the resource `jid`, charged to `class`'s budget. A full queue
    /// disconnects that session. Never waits.
    fn send(&self, jid: &FullJid, out: Outbound, class: Class) -> Result<(), SendError>;
    /// Every bound full JID.
    fn all(&self) -> Vec<FullJid>;
}

/// The single-node registry.
#[derive(Default)]
pub struct LocalRouter {
    map: DashMap<BareJid, Vec<Resource>>,
}

impl LocalRouter {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Closes a session whose queue overflowed. It stays registered until its driver unbinds it,
/// which re-routes what it still had queued; meanwhile its queue refuses stanzas, so senders
/// treat it as gone.
fn evict(jid: &FullJid, queue: &SessionQueue) {
    let text = "Too much queued for this session: it reads too slowly";
    if queue.close(StreamErrorCondition::PolicyViolation, Some(text.into())) {
        tracing::warn!(jid = %jid, "session queue full: disconnecting slow reader");
    }
}

impl Router for LocalRouter {
    fn insert(&self, res: Resource) -> Option<Resource> {
        let mut entry = self.map.entry(res.jid.to_bare()).or_default();
        if let Some(slot) = entry.iter_mut().find(|r| r.jid == res.jid) {
            return Some(std::mem::replace(slot, res));
        }
        entry.push(res);
        None
    }

    fn remove(&self, jid: &FullJid, session_id: u64) -> Option<Resource> {
        let bare = jid.to_bare();
        let removed = {
            let mut entry = self.map.get_mut(&bare)?;
            let pos = entry
                .iter()
                .position(|r| &r.jid == jid && r.session_id == session_id)?;
            entry.swap_remove(pos)
        };
        self.map.remove_if(&bare, |_, v| v.is_empty());
        Some(removed)
    }

    fn update(&self, jid: &FullJid, session_id: u64, f: &mut dyn FnMut(&mut Resource)) {
        if let Some(mut entry) = self.map.get_mut(&jid.to_bare()) {
            if let Some(r) = entry
                .iter_mut()
                .find(|r| &r.jid == jid && r.session_id == session_id)
            {
                f(r);
            }
        }
    }

    fn resources(&self, bare: &BareJid) -> Vec<Resource> {
        self.map.get(bare).map(|e| e.clone()).unwrap_or_default()
    }

    fn resource_count(&self, bare: &BareJid) -> usize {
        self.map.get(bare).map(|e| e.len()).unwrap_or(0)
    }

    fn send(&self, jid: &FullJid, out: Outbound, class: Class) -> Result<(), SendError> {
        let queue = {
            let entry = self.map.get(&jid.to_bare()).ok_or(SendError::NotFound)?;
            let r = entry
                .iter()
                .find(|r| &r.jid == jid)
                .ok_or(SendError::NotFound)?;
            Arc::clone(&r.queue)
        };
        let sent = queue.push(out, class);
        if sent == Err(SendError::Overflow) {
            evict(jid, &queue);
        }
        sent
    }

    fn all(&self) -> Vec<FullJid> {
        self.map
            .iter()
            .flat_map(|e| e.value().iter().map(|r| r.jid.clone()).collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueLimits, QueueReceiver};

    fn res(jid: &str, id: u64, cap: usize) -> (Resource, QueueReceiver) {
        let limits = QueueLimits {
            stanzas: cap,
            ..QueueLimits::default()
        };
        let (queue, rx) = SessionQueue::new(limits);
        (Resource::new(FullJid::new(jid).unwrap(), id, queue), rx)
    }

    #[test]
    fn insert_replaces_same_full_jid_and_remove_checks_session() {
        let r = LocalRouter::new();
        let (a, _ra) = res("u@x/a", 1, 4);
        let (a2, _ra2) = res("u@x/a", 2, 4);
        let (b, _rb) = res("u@x/b", 3, 4);
        assert!(r.insert(a).is_none());
        assert!(r.insert(b).is_none());
        assert_eq!(r.insert(a2).map(|o| o.session_id), Some(1));
        let bare = BareJid::new("u@x").unwrap();
        assert_eq!(r.resource_count(&bare), 2);
        // The replaced session's late unbind must not remove its successor.
        assert!(r.remove(&FullJid::new("u@x/a").unwrap(), 1).is_none());
        assert!(r.remove(&FullJid::new("u@x/a").unwrap(), 2).is_some());
        assert!(r.remove(&FullJid::new("u@x/b").unwrap(), 3).is_some());
        assert_eq!(r.resource_count(&bare), 0);
        assert!(r.all().is_empty());
    }

    fn available(jid: &str, available: bool, priority: i8) -> Resource {
        let (queue, _rx) = SessionQueue::new(QueueLimits::default());
        Resource {
            available,
            priority,
            ..Resource::new(FullJid::new(jid).unwrap(), 0, queue)
        }
    }

    fn names(v: Vec<FullJid>) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|j| j.resource().as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn highest_priority_wins_ties_go_to_all_negative_gets_none() {
        let rs = vec![
            available("u@x/a", true, 5),
            available("u@x/b", true, 5),
            available("u@x/c", true, 1),
            available("u@x/d", false, 9),
            available("u@x/e", true, -1),
        ];
        assert_eq!(names(message_targets(&rs, "chat")), ["a", "b"]);
        assert_eq!(names(message_targets(&rs, "normal")), ["a", "b"]);
        assert_eq!(names(message_targets(&rs, "headline")), ["a", "b", "c"]);
        assert!(message_targets(&rs, "groupchat").is_empty());
        assert!(message_targets(&[available("u@x/e", true, -1)], "chat").is_empty());
    }

    #[tokio::test]
    async fn full_queue_closes_the_slow_session() {
        let r = LocalRouter::new();
        let (a, rx) = res("u@x/a", 1, 1);
        r.insert(a);
        let jid = FullJid::new("u@x/a").unwrap();
        let msg = Arc::new(Element::bare("message", "jabber:client"));
        let send = |m: &Arc<Element>| r.send(&jid, Outbound::Stanza(m.clone()), Class::Push);
        assert_eq!(send(&msg), Ok(()));
        assert_eq!(send(&msg), Err(SendError::Overflow));
        // Closing: the session counts as gone for senders, before its driver unbinds it.
        assert_eq!(send(&msg), Err(SendError::NotFound));
        assert!(matches!(rx.recv().await.0, Outbound::Stanza(_)));
        match rx.recv().await.0 {
            Outbound::Close(StreamErrorCondition::PolicyViolation, Some(_)) => {}
            other => panic!("expected the close, got {other:?}"),
        }
        assert!(rx.try_recv().is_none());
    }
}
