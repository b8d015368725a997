//! Sessions that outlive their connection: what stream management resumption (XEP-0198 §5)
//! stands on.
//!
//! A driver whose connection broke may, instead of unbinding its session, park it with
//! [`Server::detach`] for a while. A parked session stays bound: it keeps its place in the
//! routing table, its presence, its room memberships, and its queue, which goes on taking what
//! others send it, within the same bounds as when a connection reads it. The stanzas its last
//! connection's writer sent but the peer never acknowledged go back to the front of that queue.
//! A new connection of the same account takes the session back with [`Server::resume`] and
//! writes, first, exactly what was not acknowledged, then what arrived meanwhile.
//!
//! A session that nobody resumes ends like any other once its time is up: [`Server::unbind`]
//! re-routes what it still holds (a message with a body to another resource or to offline
//! storage; an IQ request answered with an error) and ends its presence. It ends at once if its
//! queue is closed while parked: a bind of the same resource replaces it, the account is
//! disabled or removed, or the queue overflowed. The core ends every parked session at
//! shutdown ([`Server::end_detached`]).
//!
//! The wire protocol (`<enable/>`, `<r/>`, `<a/>`, `<resume/>`, counting `h`) is the driver's;
//! the core keeps only the session.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jid::BareJid;

use crate::queue::{Class, QueueReceiver};
use crate::session::{ClientSession, Outbound};
use crate::Server;

/// The handle a parked session is resumed by. It is a secret of the session's owner
/// (XEP-0198's SM-ID): 128 random bits, so that it cannot be guessed.
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

struct Parked {
    session: ClientSession,
    rx: QueueReceiver,
    /// Ends the session when its time is up or its queue is closed.
    expiry: tokio::task::AbortHandle,
}

/// The parked sessions of a server.
#[derive(Default)]
pub(crate) struct Detached {
    parked: Mutex<HashMap<ResumeId, Parked>>,
}

impl Detached {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResumeId, Parked>> {
        self.parked.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, id: &ResumeId) -> Option<Parked> {
        self.lock().remove(id)
    }
}

impl Server {
    /// Parks `session`, whose connection is gone, for at most `keep`; `unacked` is what that
    /// connection's writer sent without the peer acknowledging it, oldest first, which goes
    /// back in front of the queue. Returns the id to resume it with. Must be called from
    /// within a tokio runtime.
    pub fn detach(
        self: &Arc<Self>,
        session: ClientSession,
        rx: QueueReceiver,
        unacked: Vec<(Outbound, Class)>,
        keep: Duration,
    ) -> ResumeId {
        rx.queue().give_back(unacked);
        let id = ResumeId::random();
        let queue = Arc::clone(rx.queue());
        let server = Arc::clone(self);
        let mine = id.clone();
        let mut parked = self.detached.lock();
        let expiry = tokio::spawn(async move {
            // Whichever comes first: the time is up, or the queue was closed.
            let _ = tokio::time::timeout(keep, queue.closing()).await;
            if let Some(p) = server.detached.take(&mine) {
                tracing::info!(jid = %p.session.jid, "detached session not resumed: ending it");
                server.unbind(p.session).await;
            }
        })
        .abort_handle();
        tracing::info!(jid = %session.jid, "session detached from its connection");
        parked.insert(
            id.clone(),
            Parked {
                session,
                rx,
                expiry,
            },
        );
        id
    }

    /// Takes back the parked session `id` of `user` for a new connection, with its queue:
    /// what was not acknowledged comes out first. `None` if there is no such session (never
    /// was, ended, already resumed, or another account's).
    pub fn resume(&self, id: &ResumeId, user: &BareJid) -> Option<(ClientSession, QueueReceiver)> {
        let mut parked = self.detached.lock();
        let p = parked.get(id)?;
        if p.session.jid.to_bare() != *user || p.rx.queue().is_closing() {
            return None;
        }
        let p = parked.remove(id)?;
        drop(parked);
        p.expiry.abort();
        tracing::info!(jid = %p.session.jid, "detached session resumed");
        Some((p.session, p.rx))
    }

    /// How many sessions are parked right now.
    pub fn detached_count(&self) -> usize {
        self.detached.lock().len()
    }

    /// Ends every parked session (at shutdown), as if its time were up.
    pub async fn end_detached(self: &Arc<Self>) {
        let all: Vec<Parked> = self.detached.lock().drain().map(|(_, p)| p).collect();
        for p in all {
            p.expiry.abort();
            self.unbind(p.session).await;
        }
    }
}
