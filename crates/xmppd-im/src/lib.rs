//! The instant messaging services of xmppd, as modules of the routing core (`xmppd-core`):
//!
//! - `im`: RFC 6121. Roster get/set/push with versioning, the subscription state machine
//!   (including pre-approval), presence broadcast, probes, directed presence, the end of a
//!   session's presence when it unbinds or is replaced, roster items contributed by other
//!   modules (shared groups), and what removing an account changes for its contacts.
//! - `builtin`: service discovery (XEP-0030) with entity capabilities (XEP-0115), ping
//!   (XEP-0199), software version (XEP-0092), last activity (XEP-0012) and offline messages
//!   (XEP-0160), handed out page by page as the session writes them.
//! - `contact`: the contact addresses of each host (XEP-0157) in its disco#info.
//!
//! They reach the core only through its public seam (`Module` hooks, `Context`, `Server`), as
//! any other service does. The binary registers [`modules`] before every other module, so
//! that their hooks run first.

use std::sync::Arc;

use xmppd_core::module::Module;
use xmppd_core::{BareJid, Context, Outbox, Server};
use xmppd_storage::RosterItem;

mod builtin;
mod contact;
mod im;

pub use builtin::{LastQuery, LastResult, CAPS_NODE};
pub use contact::{ContactAddresses, NS_SERVER_INFO};
pub use im::{effective_roster, shares_presence};

/// The IM modules, in the order they are to be registered (before the feature modules).
pub fn modules() -> Vec<Arc<dyn Module>> {
    let mut v: Vec<Arc<dyn Module>> = vec![Arc::new(im::Im)];
    v.extend(builtin::modules());
    v
}

/// Tells `user`'s sessions that a roster item contributed by a module (a shared roster group)
/// appeared, changed or, with `removed`, went away: a roster push, and the contact's presence
/// (or unavailable) to `user`'s available resources. Call it for each side. For a service's
/// own task (a refresh timer): what it sends is routed before it returns.
pub async fn shared_roster_item_changed(
    server: &Arc<Server>,
    user: &BareJid,
    item: &RosterItem,
    removed: bool,
) {
    let mut outbox = Outbox::default();
    im::shared_item_changed(&mut Context::new(server, &mut outbox), user, item, removed).await;
    server.drain(&mut outbox).await;
}
