//! The blocking command of xmppd (XEP-0191), with spam and abuse reports (XEP-0377).
//!
//! - [`module`]: [`Blocking`], the core module: the IQs, the pushes, and what blocking does to
//!   the stanzas between a user and the JIDs it blocks.
//! - [`list`]: one account's list and the JID matching (XEP-0191 §5, XEP-0016 §2.1).
//! - [`payload`]: the requests, with their reports, and the elements sent.
//! - [`report`]: reports passed on to the administrators, within a quota per reporter.
//! - [`store`]: [`BlockStore`], and [`SqliteBlocks`], its tables in the server's SQLite file
//!   (with the features `postgres`, `mysql`: `PgBlocks`, `MysqlBlocks` on a database server).

pub mod list;
pub mod module;
pub mod payload;
pub mod report;
pub mod store;

pub use list::BlockList;
pub use module::{Blocking, Settings};
pub use report::ReportLimit;
pub use store::{BlockStore, SqliteBlocks};
