//! The routing core of xmppd: what happens to a stanza once a session is established.
//!
//! - [`Server`]: virtual hosts, the module and component registry, and `route()`.
//! - [`router::Router`]: the session registry (bare JID → resources) behind a trait, so a
//!   clustered implementation can keep one user's sessions on several nodes.
//! - [`session::ClientSession`]: the state the core keeps for one bound c2s session.
//! - [`module::Module`] / [`module::Component`]: the seams every service plugs into — IQ
//!   handlers by namespace, hooks on the message path and session lifecycle, disco features,
//!   stream features, and whole subdomains (`conference.example.org`).
//! - The choice of resources for a message to a bare JID (RFC 6121 §8.5.2,
//!   [`router::message_targets`]). Roster, presence, offline messages, disco and the other IM
//!   services are modules of their own (`xmppd-im`), on the same seams as every service.
//!
//! Architecture invariant: no sockets, no TLS, no SQL. Stanzas come in as `minidom::Element`
//! from a driver (c2s today; s2s, WebSocket, BOSH later), leave through the bounded queue of
//! each target session, and storage is reached through `xmppd-storage` traits only.

mod account;
/// Addresses a peer wrote, in their canonical form (its own crate, so that negotiation can use
/// it without the core).
pub use xmppd_address as address;
pub mod context;
pub mod detached;
pub mod fuzzing;
pub mod hash;
pub mod module;
pub mod pending;
pub mod queue;
pub mod router;
pub mod server;
pub mod session;
pub mod stanza;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use account::remove_stored_account;
pub use context::{Addressing, Context, Outbox, ServerHandle, Sessions};
pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
pub use module::{Refused, RemoteRouter};
pub use queue::{Class, QueueLimits, QueueReceiver, SessionQueue};
pub use router::{NodeId, SessionId};
pub use server::{user_ref, BindError, CoreConfig, Server, ServerBuilder};
pub use session::{handling, ClientSession, Outbound, PresenceState, SessionInfo};
