//! What the core knows of one bound client session, and what it sends to it.

use std::sync::Arc;

use jid::FullJid;
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
}
