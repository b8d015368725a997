//! The message archive of xmppd: XEP-0313 (`urn:xmpp:mam:2` and `#extended`) on accounts' bare
//! JIDs, with XEP-0059 result set management, XEP-0359 stanza ids, XEP-0334 hints, XEP-0441
//! preferences, XEP-0431 full-text search, and retention by age and total size.
//!
//! - [`module`]: [`module::MamModule`], the core module: archiving on the message path, the IQs.
//! - [`room`]: [`room::RoomArchives`], the chat rooms' archives and history, for the chat
//!   service (XEP-0313 §5.2).
//! - [`answer`]: queries and metadata answered alike for accounts and rooms.
//! - [`store`]: what is kept and how it is asked, behind [`ArchiveStore`].
//! - [`sqlite`]: [`SqliteArchive`], the tables in the server's SQLite file (FTS5 for text).
//! - [`postgres`], [`mysql`] (cargo features `postgres`, `mysql`): [`PgArchive`] and
//!   [`MysqlArchive`], the same tables on the deployment's database server, written through a
//!   group-commit queue of their own (`writer`); the SQL of a query, built once for
//!   every engine, is in `sql`.
//! - [`query`]: the query, result, `<fin/>`, metadata and preferences elements.
//! - [`policy`]: which messages are archived.
//! - [`retention`]: the purge job.
//! - [`retract`]: message retraction (XEP-0424): what a retraction names, its tombstone.

pub mod answer;
pub mod module;
#[cfg(feature = "mysql")]
pub mod mysql;
pub mod policy;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod query;
// Parts serve only the engines on a database server.
pub mod retention;
pub mod retract;
pub mod room;
#[cfg_attr(not(any(feature = "postgres", feature = "mysql")), allow(dead_code))]
mod sql;
pub mod sqlite;
pub mod store;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod writer;

#[cfg(feature = "mysql")]
pub use mysql::MysqlArchive;
#[cfg(feature = "postgres")]
pub use postgres::PgArchive;
pub use retention::Retention;
pub use room::RoomArchives;
pub use sqlite::SqliteArchive;
pub use store::{ArchiveError, ArchiveStore, DefaultPolicy, Prefs};
