//! What the core knows of one bound client session, and what it sends to it.

use std::collections::HashSet;
use std::sync::Arc;

use jid::{FullJid, Jid};
use minidom::Element;
use xmppd_stream::StreamErrorCondition;

/// Something for a session's writer: a stanza to serialise, or the end of the stream.
#[derive(Debug, Clone)]
pub enum Outbound {
    Stanza(Arc<Element>),
    /// Send `<stream:error/>` with this condition (and text) and close the stream.
    Close(StreamErrorCondition, Option<String>),
}

/// Facts about the connection, supplied by the driver when binding.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// Peer address for logs and `xmppd sessions`; empty when IP addresses are hidden.
    pub peer: String,
    /// TLS in place.
    pub secure: bool,
}

/// The core's state for one bound c2s session, owned by the session's driver task.
#[derive(Debug)]
pub struct ClientSession {
    pub jid: FullJid,
    pub id: u64,
    pub info: SessionInfo,
    /// Sent available presence and not unavailable since.
    pub(crate) available: bool,
    /// Entities this session sent directed available presence to (RFC 6121 §4.6), which get
    /// unavailable presence when it goes offline.
    pub(crate) directed: HashSet<Jid>,
    /// Offline messages were already delivered to this session.
    pub(crate) offline_done: bool,
}

impl ClientSession {
    pub(crate) fn new(jid: FullJid, id: u64, info: SessionInfo) -> Self {
        ClientSession {
            jid,
            id,
            info,
            available: false,
            directed: HashSet::new(),
            offline_done: false,
        }
    }

    /// Whether the session has sent available presence.
    pub fn is_available(&self) -> bool {
        self.available
    }
}
