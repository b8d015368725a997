//! Push notifications of xmppd (XEP-0357): a phone whose app is asleep is woken through its
//! app server when a message reaches its account while it cannot read it.
//!
//! - [`module`]: [`Push`], the core module: enable and disable, when a notification goes out,
//!   and the app servers' answers.
//! - [`payload`]: the requests, the notification, which messages are worth one, and what an
//!   app server's error means.
//! - [`tracker`]: notifications in flight per registration (one at a time, failures counted).
//! - [`store`]: [`PushStore`], and [`SqlitePush`], its table in the server's SQLite file (with
//!   the features `postgres`, `mysql`: `PgPush`, `MysqlPush` on a database server).

pub mod module;
pub mod payload;
pub mod store;
pub mod tracker;

pub use module::{Push, Settings};
pub use payload::Disclose;
pub use store::{PushStore, SqlitePush};
