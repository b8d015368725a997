//! The routing core of xmppd: what happens to a stanza once a session is established.
//!
//! - [`Server`]: virtual hosts, the module and component registry, and `route()`.
//! - [`router::Router`]: the session registry (bare JID → resources) behind a trait, so a
//!   clustered implementation can keep one user's sessions on several nodes.
//! - [`session::ClientSession`]: the state the core keeps for one bound c2s session.
//! - [`module::Module`] / [`module::Component`]: the seams every service plugs into — IQ
//!   handlers by namespace, hooks on the message/presence path, disco features, and whole
//!   subdomains (`conference.example.org`).
//! - RFC 6121 rules (roster, subscriptions, presence, message delivery), offline storage
//!   (XEP-0160), disco (XEP-0030), ping, version, last activity, caps as built-in modules.
//!
//! Architecture invariant: no sockets, no TLS, no SQL. Stanzas come in as `minidom::Element`
//! from a driver (c2s today; s2s, WebSocket, BOSH later), leave through the bounded queue of
//! each target session, and storage is reached through `xmppd-storage` traits only.

pub mod server;
pub mod session;

pub use jid::{BareJid, FullJid, Jid};
pub use minidom::Element;
pub use server::{BindError, Server};
pub use session::{ClientSession, Outbound, SessionInfo};
