//! Publish-subscribe in xmppd (XEP-0060), served twice: as personal eventing (XEP-0163) on
//! every account's bare JID, a core module, and as a pubsub service on `pubsub.HOST`, a core
//! component. Both run the same requests over the same tables.
//!
//! - [`engine`]: the requests on one owner's nodes, their rules and errors, and the events
//!   they cause.
//! - [`config`]: a node's configuration, its forms and publish-options preconditions.
//! - [`pep`]: [`Pep`], the module: notifications by presence subscription and entity
//!   capabilities (`+notify`), last items to resources that come online; requests on an
//!   account's behalf and [`PepWatcher`]s, for services that keep data in step with nodes.
//! - [`caps`]: capabilities verified (XEP-0115 §5.4) before they are cached, in a bounded
//!   cache.
//! - [`service`]: [`PubSubService`], the component, with its creation policy.
//! - [`store`]: [`NodeStore`], the storage seam, and its engines: `SqliteNodes` (nodes, items
//!   and subscriptions in the server's SQLite file), `PgNodes` and `MysqlNodes` (the same
//!   tables on PostgreSQL and MariaDB, behind the features `postgres` and `mysql`).
//! - [`payload`]: the XEP-0060 elements xmpp-parsers does not let a service read or build.

pub mod caps;
pub mod config;
pub mod engine;
pub mod errors;
pub mod payload;
pub mod pep;
pub mod service;
pub mod store;

pub use config::Limits;
pub use engine::Engine;
pub use pep::{Pep, PepWatcher};
pub use service::{CreatePolicy, PubSubService};
#[cfg(feature = "mysql")]
pub use store::MysqlNodes;
#[cfg(feature = "postgres")]
pub use store::PgNodes;
pub use store::{NodeStore, SqliteNodes};
