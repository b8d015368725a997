//! The seam between what every stream negotiates (headers, TLS, SASL) and what depends on who
//! is on the other side: the stream's namespace, the features after authentication, and what
//! must happen before the stream carries stanzas (a client binds a resource, RFC 6120 §7).

use jid::{BareJid, FullJid};
use minidom::Element;

/// One side of a negotiation after authentication. [`crate::ClientRole`] is the client's.
pub trait Role: std::fmt::Debug {
    /// Work the role needs done outside the machine (a client: bind a resource).
    type Request: std::fmt::Debug;
    /// The answer to a [`Role::Request`].
    type Reply: std::fmt::Debug;
    /// What a completed negotiation yields (a client: its full JID).
    type Ready: std::fmt::Debug;

    /// The stream's default namespace, which the peer's header must declare (RFC 6120 §4.8.2).
    fn namespace(&self) -> &'static str;

    /// The stream features offered on the restarted stream after authentication, limits
    /// excepted (the machine adds those).
    fn features(&self, user: &BareJid) -> Vec<Element>;

    /// One element from the authenticated peer before the negotiation is complete.
    fn element(&mut self, user: &BareJid, el: &Element) -> RoleStep<Self>;

    /// The answer to the request the last step asked for.
    fn reply(&mut self, user: &BareJid, reply: Self::Reply) -> RoleStep<Self>;

    /// What a negotiation completed by binding `jid` inline with SASL2 (XEP-0386) yields.
    fn ready(&self, jid: FullJid) -> Self::Ready;
}

/// What a [`Role`] wants after an element or a reply.
#[derive(Debug)]
pub enum RoleStep<R: Role + ?Sized> {
    /// Answer the peer with this and wait for its next element.
    Reply(Element),
    /// Ask the driver for this, then call [`Role::reply`].
    Ask(R::Request),
    /// Send this last answer; the negotiation is complete.
    Ready(Element, R::Ready),
    /// The element has no place here: the stream ends with the matching error.
    Unexpected,
}
