//! What the core knows of one bound client session, and what it sends to it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_stream::StreamErrorCondition;

use crate::address::Bare;
use crate::context::{Context, Outbox};
use crate::queue::{Class, SessionQueue};
use crate::router::SessionId;
use crate::stanza::{Condition, StanzaError};
use crate::Server;

/// Something for a session's writer: a stanza to serialise, a request to report back, or the
/// end of the stream.
#[derive(Debug, Clone)]
pub enum Outbound {
    Stanza(Arc<Element>),
    /// A stanza shared by several recipients (a room message, an announcement), written with
    /// `to` set to this recipient: a fan-out holds one copy of the element, not one per
    /// recipient.
    Addressed(Arc<Element>, FullJid),
    /// Everything queued before this has been written: the writer calls
    /// [`crate::Server::written`] once it has handed it to the socket.
    Written,
    /// Send `<stream:error/>` with this condition (and text) and close the stream.
    Close(StreamErrorCondition, Option<String>),
}

impl Outbound {
    /// The stanza as its recipient receives it (`Addressed` with its `to` filled in).
    pub fn to_element(&self) -> Option<Element> {
        match self {
            Outbound::Stanza(el) => Some((**el).clone()),
            Outbound::Addressed(el, to) => {
                let mut el = (**el).clone();
                crate::stanza::set_attr(&mut el, "to", to.to_string());
                Some(el)
            }
            Outbound::Written | Outbound::Close(..) => None,
        }
    }
}

tokio::task_local! {
    /// The session whose own stanza this task is handling.
    static HANDLING: FullJid;
}

/// Runs `f` as the handling of a stanza from the session `jid`: whatever is queued for that
/// session meanwhile answers its own request ([`Class::Reply`]). A component that handles a
/// session's stanza on a task of its own (a room with an inbox) wraps that handling in this.
///
/// Not an `async fn`: one would keep `f` in its state beside the scope that `f` was moved
/// into, twice its size (3 KiB more in every connection's task, the c2s loop awaiting the
/// handling of its client's stanzas).
pub fn handling<F: std::future::Future>(
    jid: FullJid,
    f: F,
) -> impl std::future::Future<Output = F::Output> {
    HANDLING.scope(jid, f)
}

/// The budget a stanza for `to` queued now is charged to.
pub(crate) fn class_for(to: &FullJid) -> Class {
    match HANDLING.try_with(|h| h == to) {
        Ok(true) => Class::Reply,
        _ => Class::Push,
    }
}

/// Facts about the connection, supplied by the driver when binding.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Peer address for logs and `xmppd sessions`; empty when IP addresses are hidden.
    pub peer: String,
    /// TLS in place.
    pub secure: bool,
    /// The client's SASL2 user agent (XEP-0388 §2.3.1) as "id software device", or empty.
    pub user_agent: String,
}

/// The presence a session has given out (RFC 6121 §4), shared with the session registry so
/// that a successor binding the same resource can end it. Locked while the session's own
/// presence is handled ([`crate::module::Module::on_presence_out`]) and while it is ended
/// ([`crate::module::Module::on_presence_end`]), so that ending it waits for, and never
/// interleaves with, what the session is sending. The core keeps it; the module handling
/// presence fills it in.
#[derive(Debug, Default)]
pub struct PresenceState {
    /// Sent available presence and not unavailable since.
    pub available: bool,
    /// Entities this session sent directed available presence to (RFC 6121 §4.6), which get
    /// unavailable presence when it goes offline.
    pub directed: HashSet<Jid>,
    /// The `on_available` hooks ran for this session (its first available presence of
    /// non-negative priority).
    pub announced: bool,
    /// Its presence was ended (the session was replaced, or is unbinding): it speaks no more.
    pub(crate) ended: bool,
}

pub(crate) type SharedPresence = Arc<tokio::sync::Mutex<PresenceState>>;

/// The core's state for one bound c2s session, owned by the session's driver task.
#[derive(Debug)]
pub struct ClientSession {
    pub jid: FullJid,
    pub id: SessionId,
    pub info: SessionInfo,
    pub(crate) presence: SharedPresence,
    /// The session's outbound queue (ended, and its remainder re-routed, at unbind).
    pub(crate) queue: Arc<SessionQueue>,
    /// Its client syncs through the message archive (see [`ClientSession::syncs_archive`]).
    archive_sync: AtomicBool,
}

impl ClientSession {
    pub(crate) fn new(
        jid: FullJid,
        id: SessionId,
        info: SessionInfo,
        queue: Arc<SessionQueue>,
        presence: SharedPresence,
    ) -> Self {
        ClientSession {
            jid,
            id,
            info,
            presence,
            queue,
            archive_sync: AtomicBool::new(false),
        }
    }

    /// Marks the session's client as one that syncs through the account's message archive
    /// (the archive's module does when the session queries it, XEP-0313 §4): when the session
    /// ends, it fetches what the archive holds from there.
    pub fn mark_archive_sync(&self) {
        self.archive_sync.store(true, Ordering::Relaxed);
    }

    /// Whether [`ClientSession::mark_archive_sync`] was called: a message still queued for the
    /// session when it ends that the archive holds (it carries the account's
    /// `<stanza-id by=BARE/>`, XEP-0359) goes to another resource, but not to offline storage
    /// as well, where the client would find it a second time.
    pub fn syncs_archive(&self) -> bool {
        self.archive_sync.load(Ordering::Relaxed)
    }

    /// The session's outbound queue, for what is queued from its own task (a page of offline
    /// messages, [`Class::Stored`]).
    pub fn queue(&self) -> &Arc<SessionQueue> {
        &self.queue
    }

    /// Whether the session has sent available presence (false while a successor is ending it).
    pub fn is_available(&self) -> bool {
        self.presence.try_lock().is_ok_and(|p| p.available)
    }
}

/// Ends `session`'s queue once it is unregistered, and gives what it still held a new
/// destination, as RFC 6121 §8.5.3.2.1 treats stanzas for a resource that is gone: a message
/// for the account goes to another of its resources, else to offline storage (if it has a
/// body, unless the archive holds it for a client that syncs through it:
/// [`ClientSession::syncs_archive`]); groupchat, headline and error messages and presence are
/// dropped; an IQ request is answered with `<service-unavailable/>`. `priority` is the session's last (negative when
/// unavailable), which tells whether a message to the bare JID already reached the others.
pub(crate) async fn end_queue(server: &Arc<Server>, session: &ClientSession, priority: i8) {
    let left = session.queue.end();
    let mut outbox = Outbox::default();
    let cx = &mut Context::new(server, &mut outbox);
    for m in server.modules() {
        m.on_queue_ended(cx, session).await;
    }
    if !left.is_empty() {
        tracing::debug!(jid = %session.jid, count = left.len(), "re-routing what was queued");
    }
    let bare = session.jid.bare();
    for (out, class) in left {
        // A stored offline message stays stored until written; its next session gets it.
        if class == Class::Stored {
            continue;
        }
        let Some(el) = out.to_element() else {
            continue;
        };
        match el.name() {
            "message" => {
                let kind = match el.attr("type") {
                    Some(k @ ("groupchat" | "headline" | "error")) => {
                        tracing::debug!(kind = k, "dropping a message for an ended session");
                        continue;
                    }
                    Some("chat") => "chat",
                    _ => "normal",
                };
                if to_bare_reached_others(server, &el, &bare, priority) {
                    continue;
                }
                let offline = !(session.syncs_archive() && archived_for(&el, &bare));
                server
                    .message_to_bare(cx, Arc::new(el), &bare, kind, offline)
                    .await;
            }
            "iq" if matches!(el.attr("type"), Some("get" | "set")) => {
                cx.bounce(&el, StanzaError::new(Condition::ServiceUnavailable));
            }
            _ => {}
        }
    }
    server.drain(&mut outbox).await;
}

/// Whether `msg` carries the stanza id of `bare`'s own archive (XEP-0359 §4: only the archive
/// sets it; it removes any other claiming to be its own).
fn archived_for(msg: &Element, bare: &BareJid) -> bool {
    (msg.children())
        .any(|c| c.is("stanza-id", crate::stanza::NS_SID) && c.attr("by") == Some(bare.as_str()))
}

/// Whether `msg`, addressed to the bare JID, was also delivered to another available resource:
/// one with the same non-negative priority took it in the same delivery (RFC 6121 §8.5.2.1.1).
fn to_bare_reached_others(server: &Server, msg: &Element, bare: &BareJid, priority: i8) -> bool {
    let to_bare = msg
        .attr("to")
        .and_then(|t| Jid::new(t).ok())
        .is_some_and(|t| t.resource().is_none());
    to_bare
        && priority >= 0
        && (server.router().resources(bare).iter()).any(|r| r.available && r.priority == priority)
}
