//! Sessions that outlive their connection: what stream management resumption (XEP-0198 §5)
//! stands on.
//!
//! A driver that may keep a session across connections registers it as resumable
//! ([`Server::resumable`]), which allots the id the session is resumed by. When its connection
//! broke, the driver, instead of unbinding the session, parks it with [`Server::detach`] for a
//! while. A parked session stays bound: it keeps its place in the routing table, its presence,
//! its room memberships, and its queue, which goes on taking what others send it, within the
//! same bounds as when a connection reads it. The stanzas its last connection's writer sent but
//! the peer never acknowledged go back to the front of that queue. A new connection of the same
//! account takes the session back with [`Server::resume`] and writes, first, exactly what was
//! not acknowledged, then what arrived meanwhile; the modules' `on_session_resumed` hooks run
//! first (what belongs to a stream, not to the session, starts over). A resume of a session whose connection has
//! not noticed yet that it is dead (XEP-0198 §5: the client knows first) asks that connection
//! to park it now, and waits (bounded) until it did.
//!
//! A session that nobody resumes ends like any other once its time is up: [`Server::unbind`]
//! re-routes what it still holds (a message with a body to another resource or to offline
//! storage; an IQ request answered with an error) and ends its presence. It ends at once if its
//! queue is closed while parked: a bind of the same resource replaces it, the account is
//! disabled or removed, or the queue overflowed. Parked sessions count against the account's
//! resource limit; a bind beyond it ends the oldest parked one instead of being refused. The
//! core ends every parked session at shutdown ([`Server::end_detached`]).
//!
//! The wire protocol (`<enable/>`, `<r/>`, `<a/>`, `<resume/>`, counting `h`) is the driver's;
//! the core keeps the session and, opaque, what the driver wants back on resumption (its
//! counters), also for a while after the session ended, so that a late resume can be told them.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::{BareJid, FullJid};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::address::Bare;
use crate::queue::{Class, QueueReceiver};
use crate::session::{ClientSession, Outbound};
use crate::Server;

/// What a driver keeps with a parked session for its resumption (its counters).
pub type DriverState = Arc<dyn Any + Send + Sync>;

/// How many ended sessions' driver states are remembered for a late resume.
const REMEMBERED: usize = 1024;

/// The handle a parked session is resumed by. It is a secret of the session's owner
/// (XEP-0198's SM-ID): 128 random bits, so that it cannot be guessed; and it resumes only a
/// session of the account that presents it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResumeId(String);

impl ResumeId {
    fn random() -> Self {
        ResumeId(format!("{:032x}", rand::random::<u128>()))
    }

    /// The id as written on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for ResumeId {
    fn from(s: &str) -> Self {
        ResumeId(s.to_owned())
    }
}

/// The connection of a resumable session is asked to park it at once: a new connection
/// resumes it.
#[derive(Debug, Clone)]
pub struct Takeover(Arc<Notify>);

impl Takeover {
    /// Resolves once a resume asks for the session; made once, polled for the connection's
    /// whole life.
    pub fn requested(&self) -> impl Future<Output = ()> + Send + 'static {
        let notify = Arc::clone(&self.0);
        async move { notify.notified().await }
    }
}

/// A resumable session whose connection is still there.
struct Live {
    user: BareJid,
    takeover: Arc<Notify>,
    /// Wakes a resume waiting for the takeover: the session is parked, or ended.
    parked: Arc<Notify>,
}

struct Parked {
    session: ClientSession,
    rx: QueueReceiver,
    state: DriverState,
    since: Instant,
    /// Ends the session when its time is up or its queue is closed.
    expiry: tokio::task::AbortHandle,
}

/// A parked session taken back. It is resumable again under the same id (XEP-0198 §5: the
/// client keeps the id of its first `<enabled/>`).
pub struct Resumed {
    pub session: ClientSession,
    pub rx: QueueReceiver,
    /// What the driver gave [`Server::detach`].
    pub state: DriverState,
    /// What tells the new connection that yet another one resumes the session.
    pub takeover: Takeover,
}

/// Why [`Server::resume`] found nothing to resume.
pub enum NotResumed {
    /// No such session for this account (never was, or long gone).
    Unknown,
    /// The session ended a short while ago (its time was up); what its driver kept.
    Ended(DriverState),
}

#[derive(Default)]
struct Inner {
    parked: HashMap<ResumeId, Parked>,
    live: HashMap<ResumeId, Live>,
    /// Sessions that ended while parked, newest last, bounded.
    ended: VecDeque<(ResumeId, BareJid, DriverState)>,
}

/// The resumable sessions of a server.
#[derive(Default)]
pub(crate) struct Detached {
    inner: Mutex<Inner>,
}

impl Detached {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the resumable session `id` of `user` as connected.
    fn connected(&self, id: &ResumeId, user: BareJid) -> Takeover {
        let takeover = Arc::new(Notify::new());
        let live = Live {
            user,
            takeover: Arc::clone(&takeover),
            parked: Arc::new(Notify::new()),
        };
        self.lock().live.insert(id.clone(), live);
        Takeover(takeover)
    }

    /// Removes the parked session `id` for ending it, remembering its driver state.
    fn take_ending(&self, id: &ResumeId) -> Option<Parked> {
        let mut inner = self.lock();
        let p = inner.parked.remove(id)?;
        if inner.ended.len() >= REMEMBERED {
            inner.ended.pop_front();
        }
        let user = p.session.jid.bare();
        inner
            .ended
            .push_back((id.clone(), user, Arc::clone(&p.state)));
        Some(p)
    }
}

impl Server {
    /// Registers `session`, still connected, as resumable: returns its id and what tells its
    /// connection that a resume takes it over. The driver calls [`Server::detach`] with that id
    /// when the connection breaks, or [`Server::forget_resumable`] when the session ends.
    pub fn resumable(&self, session: &ClientSession) -> (ResumeId, Takeover) {
        let id = ResumeId::random();
        let takeover = self.detached.connected(&id, session.jid.bare());
        (id, takeover)
    }

    /// The resumable session `id` ended with its connection: it can no longer be resumed.
    pub fn forget_resumable(&self, id: &ResumeId) {
        if let Some(live) = self.detached.lock().live.remove(id) {
            live.parked.notify_one();
        }
    }

    /// Parks `session`, whose connection is gone, for at most `keep` under `id` (from
    /// [`Server::resumable`]); `unacked` is what that connection's writer sent without the
    /// peer acknowledging it, oldest first, which goes back in front of the queue; `state` is
    /// given back on resumption. Must be called from within a tokio runtime.
    pub fn detach(
        self: &Arc<Self>,
        session: ClientSession,
        rx: QueueReceiver,
        unacked: Vec<(Outbound, Class)>,
        keep: Duration,
        id: ResumeId,
        state: DriverState,
    ) {
        rx.queue().give_back(unacked);
        let queue = Arc::clone(rx.queue());
        let server = Arc::clone(self);
        let mine = id.clone();
        let mut inner = self.detached.lock();
        let expiry = tokio::spawn(async move {
            // Whichever comes first: the time is up, or the queue was closed.
            let _ = tokio::time::timeout(keep, queue.closing()).await;
            if let Some(p) = server.detached.take_ending(&mine) {
                tracing::info!(jid = %p.session.jid, "detached session not resumed: ending it");
                server.unbind(p.session).await;
            }
        })
        .abort_handle();
        tracing::info!(jid = %session.jid, "session detached from its connection");
        let live = inner.live.remove(&id);
        let parked = Parked {
            session,
            rx,
            state,
            since: Instant::now(),
            expiry,
        };
        inner.parked.insert(id, parked);
        drop(inner);
        if let Some(live) = live {
            live.parked.notify_one();
        }
    }

    /// Takes back the session `id` of `user` for a new connection, with its queue: what was
    /// not acknowledged comes out first. A session whose connection is still there is taken
    /// over: that connection is asked to park it, and this waits for that at most `wait`.
    /// Another account's id is as unknown as one that never was.
    pub async fn resume(
        self: &Arc<Self>,
        id: &ResumeId,
        user: &BareJid,
        wait: Duration,
    ) -> Result<Resumed, NotResumed> {
        let waiting = {
            let inner = self.detached.lock();
            match inner.live.get(id) {
                Some(live) if live.user == *user => {
                    live.takeover.notify_one();
                    Some(Arc::clone(&live.parked))
                }
                _ => None,
            }
        };
        if let Some(parked) = waiting {
            let _ = tokio::time::timeout(wait, parked.notified()).await;
        }
        let p = self.take_parked(id, user)?;
        p.expiry.abort();
        tracing::info!(jid = %p.session.jid, "detached session resumed");
        let takeover = self.detached.connected(id, user.clone());
        let mut outbox = crate::context::Outbox::default();
        let cx = &mut crate::context::Context::new(self, &mut outbox);
        for m in self.modules() {
            m.on_session_resumed(cx, &p.session).await;
        }
        self.drain(&mut outbox).await;
        Ok(Resumed {
            session: p.session,
            rx: p.rx,
            state: p.state,
            takeover,
        })
    }

    /// Removes the parked session `id` of `user` for resuming it, unless its queue is closing
    /// (it ends anyway).
    fn take_parked(&self, id: &ResumeId, user: &BareJid) -> Result<Parked, NotResumed> {
        let mut inner = self.detached.lock();
        let found = inner
            .parked
            .get(id)
            .map(|p| p.session.jid.bare() == *user && !p.rx.queue().is_closing());
        if found != Some(true) {
            let ended = inner
                .ended
                .iter()
                .rev()
                .find(|(i, u, _)| i == id && u == user);
            return Err(match ended {
                Some((_, _, state)) => NotResumed::Ended(Arc::clone(state)),
                None => NotResumed::Unknown,
            });
        }
        inner.parked.remove(id).ok_or(NotResumed::Unknown)
    }

    /// How many sessions are parked right now.
    pub fn detached_count(&self) -> usize {
        self.detached.lock().parked.len()
    }

    /// Whether the session bound as `jid` is parked: bound, but with no connection to write
    /// to until it is resumed (a queue being closed no longer counts: the session is ending).
    pub fn is_detached(&self, jid: &FullJid) -> bool {
        (self.detached.lock().parked.values())
            .any(|p| p.session.jid == *jid && !p.rx.queue().is_closing())
    }

    /// Ends the parked session of `user` that was parked first, if there is one: a bind that
    /// would exceed the account's resource limit makes room this way. Returns whether it did.
    pub(crate) async fn end_oldest_detached(self: &Arc<Self>, user: &BareJid) -> bool {
        let oldest = {
            let inner = self.detached.lock();
            (inner.parked.iter())
                .filter(|(_, p)| p.session.jid.bare() == *user)
                .min_by_key(|(_, p)| p.since)
                .map(|(id, _)| id.clone())
        };
        let Some(p) = oldest.and_then(|id| self.detached.take_ending(&id)) else {
            return false;
        };
        p.expiry.abort();
        tracing::info!(jid = %p.session.jid, "detached session ended for a new one");
        self.unbind(p.session).await;
        true
    }

    /// Ends every parked session (at shutdown), as if its time were up.
    pub async fn end_detached(self: &Arc<Self>) {
        let all: Vec<Parked> = (self.detached.lock().parked.drain())
            .map(|(_, p)| p)
            .collect();
        for p in all {
            p.expiry.abort();
            self.unbind(p.session).await;
        }
    }
}
