//! Personal data of accounts in xmppd, as core modules on every account's bare JID:
//!
//! - [`private`]: [`PrivateStorage`], private XML storage (XEP-0049), and bookmarks kept in
//!   step between XEP-0402 and the legacy XEP-0048 forms (XEP-0402 §5.3).
//! - [`vcard`]: [`VCards`], vCard-temp (XEP-0054), with the photo kept in step with the
//!   account's XEP-0084 avatar (XEP-0398) and its hash put in presence (XEP-0153).
//! - [`bookmarks`], [`avatar`]: the pure conversions.
//! - [`nodes`]: requests on the account's personal eventing nodes on its behalf.
//! - [`store`]: [`PersonalStore`], and its engines: `SqlitePersonal` (its tables in the
//!   server's SQLite file), `PgPersonal` and `MysqlPersonal` (the same tables on PostgreSQL
//!   and MariaDB, behind the features `postgres` and `mysql`); emptied with the account.
//!
//! XEP-0292 (vCard4) and XEP-0084 avatars themselves are plain personal eventing nodes,
//! served by `xmppd-pubsub`.

pub mod avatar;
pub mod bookmarks;
pub mod nodes;
pub mod private;
pub mod store;
pub mod vcard;

use minidom::Element;
use xmppd_core::stanza::{Condition, StanzaError};

pub use private::PrivateStorage;
#[cfg(feature = "mysql")]
pub use store::MysqlPersonal;
#[cfg(feature = "postgres")]
pub use store::PgPersonal;
pub use store::{PersonalStore, SqlitePersonal};
pub use vcard::VCards;

/// An element as it is stored and measured against the size limits.
fn serialize(el: &Element) -> String {
    let mut xml = Vec::new();
    xmppd_stream::serialize(el, "", &mut xml);
    String::from_utf8_lossy(&xml).into_owned()
}

fn storage_error(e: xmppd_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "personal data: storage failed");
    StanzaError::new(Condition::InternalServerError)
}
