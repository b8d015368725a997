//! The routing core of xmppd: what happens to a stanza once a session is established.
//!
//! - [`Server`]: virtual hosts, the module and component registry, and `route()`.
//! - [`router::Router`]: the session registry (bare JID → resources) behind a trait, so a
//!   clustered implementation can keep one user's sessions on several nodes.
//! - [`session::ClientSession`]: the state the core keeps for one bound c2s session.
//! - [`module::Module`] / [`module::Component`]: the seams every service plugs into — IQ
//!   handlers by namespace, hooks on the message path and session lifecycle, disco features,
//!   stream features, and whole subdomains (`conference.example.org`).
//! - RFC 6121 rules (`im`: roster, subscriptions, presence, message delivery) and built-in
//!   modules (`builtin`: disco + caps, ping, version, last activity, offline messages).
//!
//! Architecture invariant: no sockets, no TLS, no SQL. Stanzas come in as `minidom::Element`
//! from a driver (c2s today; s2s, WebSocket, BOSH later), leave through the bounded queue of
//! each target session, and storage is reached through `xmppd-storage` traits only.

mod account;
/// Addresses a peer wrote, in their canonical form (its own crate, so that negotiation can use
/// it without the core).
pub use xmppd_address as address;
mod builtin;
pub mod context;
pub mod fuzzing;
mod im;
pub mod module;
pub mod queue;
pub mod router;
pub mod server;
pub mod session;
pub mod stanza;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use account::remove_stored_account;
pub use builtin::CAPS_NODE;
pub use context::{Context, ServerHandle};
pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
pub use queue::{Class, QueueLimits, QueueReceiver, SessionQueue};
pub use server::{user_ref, BindError, CoreConfig, Server, ServerBuilder};
pub use session::{handling, ClientSession, Outbound, SessionInfo};
