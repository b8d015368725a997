//! The session registry: which resources of which account are bound, with their priority,
//! availability and last presence, and where each session's outbound queue is.
//!
//! The routing table is plain data: each [`Resource`] names its session by a [`SessionId`],
//! unique across nodes, and holds no channel. The channels of the sessions bound on this node
//! (their queue and presence lock, a [`LocalSession`]) are kept apart, in a map keyed by that
//! id. A clustered router can therefore put another node's sessions into the same table, and
//! every caller keeps working on the table alone.
//!
//! [`Router`] is a trait so that a clustered implementation can keep one account's resources on
//! several nodes; [`LocalRouter`] is the single-process one. Both maps are sharded (no global
//! lock on the hot path): a lookup locks one shard, for the time of a copy.

use std::fmt;
use std::sync::Arc;

use crate::address::Bare;
use crate::hash::DashMap;
use jid::{BareJid, FullJid};
use minidom::Element;
use xmppd_stream::StreamErrorCondition;

use crate::queue::{Class, SessionQueue};
use crate::session::{Outbound, SharedPresence};

/// The node a session is bound on. One per process; every node of a cluster needs its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node of a server that is not part of a cluster.
    pub const SINGLE: NodeId = NodeId(0);
}

/// A bound session, unique across the nodes of a cluster and over the life of a process: the
/// node it is bound on and a counter of that node. Distinguishes a replaced session from its
/// successor for the same full JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub node: NodeId,
    pub seq: u64,
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.node.0, self.seq)
    }
}

/// One bound resource as the routing table knows it: plain data, wherever the session is.
#[derive(Debug, Clone)]
pub struct Resource {
    pub jid: FullJid,
    pub session: SessionId,
    /// Has sent initial presence and not gone unavailable since.
    pub available: bool,
    pub priority: i8,
    /// The last available presence broadcast (answers probes).
    pub presence: Option<Arc<Element>>,
    /// Requested the roster (receives roster pushes).
    pub interested: bool,
}

impl Resource {
    /// A freshly bound resource: not yet available, priority 0, no roster interest.
    pub fn new(jid: FullJid, session: SessionId) -> Self {
        Resource {
            jid,
            session,
            available: false,
            priority: 0,
            presence: None,
            interested: false,
        }
    }
}

/// The channels of a session bound on this node.
#[derive(Debug, Clone)]
pub struct LocalSession {
    /// Its outbound queue; [`SessionQueue::close`] ends the session.
    pub queue: Arc<SessionQueue>,
    /// Its presence state, which a successor for the same resource ends.
    pub(crate) presence: SharedPresence,
}

impl LocalSession {
    pub fn new(queue: Arc<SessionQueue>) -> Self {
        LocalSession {
            queue,
            presence: SharedPresence::default(),
        }
    }
}

/// An entry replaced by [`Router::insert`], and its channels if it was bound on this node.
pub type Replaced = (Resource, Option<LocalSession>);

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
    /// Registers a resource bound on this node with its channels. Returns the entry it
    /// replaces (same full JID), if any, with its channels if that session was bound here,
    /// which the router forgets.
    fn insert(&self, res: Resource, local: LocalSession) -> Option<Replaced>;
    /// Unregisters `jid` if it is still the session `session`.
    fn remove(&self, jid: &FullJid, session: SessionId) -> Option<Resource>;
    /// Applies `f` to the resource `jid` if it is the session `session`.
    fn update(&self, jid: &FullJid, session: SessionId, f: &mut dyn FnMut(&mut Resource));
    /// Calls `f` with the resources of an account (empty when none), without copying them.
    /// `f` runs under the table's lock: it must not call back into the router.
    fn with_resources(&self, bare: &BareJid, f: &mut dyn FnMut(&[Resource]));
    /// The channels of a session bound on this node.
    fn local(&self, session: SessionId) -> Option<LocalSession>;
    /// Queues `out` for the resource `jid`, charged to `class`'s budget. A full queue
    /// disconnects that session. Never waits.
    fn send(&self, jid: &FullJid, out: Outbound, class: Class) -> Result<(), SendError>;
    /// Every bound full JID.
    fn all(&self) -> Vec<FullJid>;

    /// All resources of an account (empty when none), copied.
    fn resources(&self, bare: &BareJid) -> Vec<Resource> {
        let mut v = Vec::new();
        self.with_resources(bare, &mut |rs| v = rs.to_vec());
        v
    }

    /// Number of resources bound for an account.
    fn resource_count(&self, bare: &BareJid) -> usize {
        let mut n = 0;
        self.with_resources(bare, &mut |rs| n = rs.len());
        n
    }

    /// Closes the session `session` with a stream error; false if it is not bound here or
    /// already closing. Never waits for queue space.
    fn close(&self, session: SessionId, cond: StreamErrorCondition, text: Option<&str>) -> bool {
        self.local(session)
            .is_some_and(|l| l.queue.close(cond, text.map(str::to_owned)))
    }
}

/// The single-node registry: the routing table, and the channels of the sessions in it.
#[derive(Default)]
pub struct LocalRouter {
    table: DashMap<Account, Vec<Resource>>,
    locals: DashMap<SessionId, LocalSession>,
}

/// A key of the routing table: an account, looked up by its bare JID's string, so that a full
/// JID finds its account without a bare JID being built (and allocated) for each stanza.
#[derive(PartialEq, Eq, Hash)]
struct Account(BareJid);

// `Hash` and `Eq` of a `BareJid` are those of its string, as `Borrow<str>` requires.
impl std::borrow::Borrow<str> for Account {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

/// The bare JID part of `jid`'s string.
fn bare_str(jid: &FullJid) -> &str {
    let full = jid.as_str();
    &full[..full.len() - jid.resource().as_str().len() - 1]
}

impl LocalRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn session_of(&self, jid: &FullJid) -> Option<SessionId> {
        let entry = self.table.get(bare_str(jid))?;
        entry.iter().find(|r| &r.jid == jid).map(|r| r.session)
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
    fn insert(&self, res: Resource, local: LocalSession) -> Option<Replaced> {
        self.locals.insert(res.session, local);
        let replaced = {
            let mut entry = self.table.entry(Account(res.jid.bare())).or_default();
            match entry.iter_mut().find(|r| r.jid == res.jid) {
                Some(slot) => Some(std::mem::replace(slot, res)),
                None => {
                    entry.push(res);
                    None
                }
            }
        };
        replaced.map(|entry| {
            let local = self.locals.remove(&entry.session).map(|(_, l)| l);
            (entry, local)
        })
    }

    fn remove(&self, jid: &FullJid, session: SessionId) -> Option<Resource> {
        let bare = bare_str(jid);
        let removed = {
            let mut entry = self.table.get_mut(bare)?;
            let pos = entry
                .iter()
                .position(|r| &r.jid == jid && r.session == session)?;
            entry.swap_remove(pos)
        };
        self.table.remove_if(bare, |_, v| v.is_empty());
        self.locals.remove(&session);
        Some(removed)
    }

    fn update(&self, jid: &FullJid, session: SessionId, f: &mut dyn FnMut(&mut Resource)) {
        if let Some(mut entry) = self.table.get_mut(bare_str(jid)) {
            if let Some(r) = entry
                .iter_mut()
                .find(|r| &r.jid == jid && r.session == session)
            {
                f(r);
            }
        }
    }

    fn with_resources(&self, bare: &BareJid, f: &mut dyn FnMut(&[Resource])) {
        match self.table.get(bare.as_str()) {
            Some(entry) => f(&entry),
            None => f(&[]),
        }
    }

    fn local(&self, session: SessionId) -> Option<LocalSession> {
        self.locals.get(&session).map(|l| l.clone())
    }

    fn send(&self, jid: &FullJid, out: Outbound, class: Class) -> Result<(), SendError> {
        let session = self.session_of(jid).ok_or(SendError::NotFound)?;
        let queue = {
            let local = self.locals.get(&session).ok_or(SendError::NotFound)?;
            Arc::clone(&local.queue)
        };
        let sent = queue.push(out, class);
        if sent == Err(SendError::Overflow) {
            xmppd_metrics::queue_overflow();
            evict(jid, &queue);
        }
        sent
    }

    fn all(&self) -> Vec<FullJid> {
        self.table
            .iter()
            .flat_map(|e| e.value().iter().map(|r| r.jid.clone()).collect::<Vec<_>>())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::{QueueLimits, QueueReceiver};

    fn sid(seq: u64) -> SessionId {
        SessionId {
            node: NodeId::SINGLE,
            seq,
        }
    }

    fn res(jid: &str, seq: u64, cap: usize) -> (Resource, LocalSession, QueueReceiver) {
        let limits = QueueLimits {
            stanzas: cap,
            ..QueueLimits::default()
        };
        let (queue, rx) = SessionQueue::new(limits);
        let jid = FullJid::new(jid).unwrap();
        (Resource::new(jid, sid(seq)), LocalSession::new(queue), rx)
    }

    #[test]
    fn insert_replaces_same_full_jid_and_remove_checks_session() {
        let r = LocalRouter::new();
        let (a, la, _ra) = res("u@x/a", 1, 4);
        let (a2, la2, _ra2) = res("u@x/a", 2, 4);
        let (b, lb, _rb) = res("u@x/b", 3, 4);
        assert!(r.insert(a, la).is_none());
        assert!(r.insert(b, lb).is_none());
        let (old, old_local) = r.insert(a2, la2).expect("replaced");
        assert_eq!(old.session, sid(1));
        assert!(
            old_local.is_some(),
            "the replaced session's channels are handed back"
        );
        assert!(r.local(sid(1)).is_none(), "and forgotten by the router");
        let bare = BareJid::new("u@x").unwrap();
        assert_eq!(r.resource_count(&bare), 2);
        // The replaced session's late unbind must not remove its successor.
        assert!(r.remove(&FullJid::new("u@x/a").unwrap(), sid(1)).is_none());
        assert!(r.local(sid(2)).is_some());
        assert!(r.remove(&FullJid::new("u@x/a").unwrap(), sid(2)).is_some());
        assert!(r.remove(&FullJid::new("u@x/b").unwrap(), sid(3)).is_some());
        assert_eq!(r.resource_count(&bare), 0);
        assert!(r.all().is_empty());
        assert!(r.local(sid(2)).is_none() && r.local(sid(3)).is_none());
    }

    /// The table holds data only; a session's queue is reached through its id.
    #[tokio::test]
    async fn entries_name_their_session_and_its_channels_are_kept_apart() {
        let r = LocalRouter::new();
        let (a, la, rx) = res("u@x/a", 7, 4);
        r.insert(a, la);
        let bare = BareJid::new("u@x").unwrap();
        r.update(&FullJid::new("u@x/a").unwrap(), sid(7), &mut |e| {
            e.available = true;
            e.priority = 5;
        });
        // Another session's id does not update it.
        r.update(&FullJid::new("u@x/a").unwrap(), sid(8), &mut |e| {
            e.priority = 9
        });
        let mut seen = Vec::new();
        r.with_resources(&bare, &mut |rs| {
            seen = rs
                .iter()
                .map(|e| (e.session, e.available, e.priority))
                .collect()
        });
        assert_eq!(seen, [(sid(7), true, 5)]);
        assert_eq!(sid(7).to_string(), "0-7");
        let cond = StreamErrorCondition::Conflict;
        assert!(r.close(sid(7), cond, Some("bye")));
        assert!(!r.close(sid(7), cond, None), "already closing");
        assert!(!r.close(sid(9), cond, None), "not bound here");
        match rx.recv().await.0 {
            Outbound::Close(StreamErrorCondition::Conflict, Some(t)) => assert_eq!(t, "bye"),
            other => panic!("expected the close, got {other:?}"),
        }
    }

    fn available(jid: &str, available: bool, priority: i8) -> Resource {
        Resource {
            available,
            priority,
            ..Resource::new(FullJid::new(jid).unwrap(), sid(0))
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
        let (a, la, rx) = res("u@x/a", 1, 1);
        r.insert(a, la);
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
