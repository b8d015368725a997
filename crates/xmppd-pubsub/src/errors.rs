//! XEP-0060 errors: a stanza condition with its `pubsub#errors` condition (§7, §6).

use xmpp_parsers::ns;
use xmppd_core::stanza::{elem, Condition, StanzaError};

/// `condition` with the XEP-0060 application condition `app` (e.g. `precondition-not-met`).
pub fn pubsub_error(condition: Condition, app: &str) -> StanzaError {
    StanzaError::new(condition).with_app(elem(app, ns::PUBSUB_ERRORS, &[]))
}

/// A storage failure, as the requester sees it: try again later.
pub fn storage(e: xmppd_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "pubsub storage failed");
    StanzaError::new(Condition::InternalServerError)
}

pub fn item_not_found() -> StanzaError {
    StanzaError::new(Condition::ItemNotFound)
}

pub fn forbidden() -> StanzaError {
    StanzaError::new(Condition::Forbidden)
}
