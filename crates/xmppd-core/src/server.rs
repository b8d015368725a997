//! [`Server`]: the hosts, the registry of modules and components, and the routing of stanzas.

use std::sync::Arc;

use jid::BareJid;
use minidom::Element;
use tokio::sync::mpsc;

use crate::session::{ClientSession, Outbound, SessionInfo};

/// Why a resource could not be bound (RFC 6120 §7.6.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindError {
    /// The requested resource is not a valid resourcepart: `<bad-request/>`.
    #[error("bad resource")]
    BadRequest,
    /// Too many resources for this account: `<resource-constraint/>`.
    #[error("too many resources")]
    ResourceConstraint,
    /// The account may not bind (disabled): `<not-allowed/>`.
    #[error("not allowed")]
    NotAllowed,
}

/// The core of one xmppd process.
pub struct Server {
    _private: (),
}

impl Server {
    /// The virtual hosts served, normalised.
    pub fn hosts(&self) -> &[String] {
        todo!()
    }

    pub fn is_local_host(&self, domain: &str) -> bool {
        let _ = domain;
        todo!()
    }

    /// Stream features the core and its modules add after authentication, besides `<bind/>`
    /// and `<session/>` that the driver writes (e.g. roster versioning `<ver/>`, caps `<c/>`).
    pub fn c2s_features(&self) -> Vec<Element> {
        todo!()
    }

    /// Binds a resource for `user` (server-generated when `resource` is `None`). A session already
    /// holding that resource is replaced: it receives `Outbound::Close(Conflict)`. Returns the
    /// session state and the receiving end of its outbound queue (bounded to `queue_len`).
    pub async fn bind(
        self: &Arc<Self>,
        user: BareJid,
        resource: Option<&str>,
        info: SessionInfo,
        queue_len: usize,
    ) -> Result<(ClientSession, mpsc::Receiver<Outbound>), BindError> {
        let _ = (user, resource, info, queue_len);
        todo!()
    }

    /// Processes one stanza (`message`, `presence`, `iq` in `jabber:client`) from an established
    /// session: stamps `from`, applies hooks and RFC 6121 rules, routes it. Never fails: errors go
    /// back to the sender as stanza errors.
    pub async fn handle_from_client(self: &Arc<Self>, session: &mut ClientSession, stanza: Element) {
        let _ = (session, stanza);
        todo!()
    }

    /// Ends a session: unavailable presence to subscribers and directed-presence targets,
    /// unregisters the resource.
    pub async fn unbind(self: &Arc<Self>, session: ClientSession) {
        let _ = session;
        todo!()
    }
}
