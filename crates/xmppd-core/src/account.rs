//! Removing an account: one operation behind every way of doing it (in-band registration,
//! the command line, administration commands), so that none of them leaves a footprint.

use std::sync::Arc;
use std::time::Duration;

use jid::{BareJid, FullJid};
use xmppd_storage::{AccountRemoval, CredentialStore, StorageError, UserRef};
use xmppd_stream::StreamErrorCondition;

use crate::context::{Context, Outbox};
use crate::server::{user_ref, Server};
use crate::stanza;

impl Server {
    /// [`Context::remove_account`] for callers outside any handler (the admin socket): what
    /// the removal sends is dispatched before this returns.
    pub async fn remove_account(
        self: &Arc<Self>,
        user: &BareJid,
        requester: Option<&FullJid>,
    ) -> Result<AccountRemoval, StorageError> {
        let mut outbox = Outbox::default();
        let removed = Context::new(self, &mut outbox)
            .remove_account(user, requester)
            .await;
        self.drain(&mut outbox).await;
        removed
    }
}

impl Context<'_> {
    /// Removes the account `user` with everything stored for it and its footprint in other
    /// accounts' data (see `CredentialStore::remove_account`), keeping its name from being
    /// registered again for [`crate::CoreConfig::tombstone`]. Then, live: its sessions end
    /// (`<not-authorized/>`), its contacts are told (roster pushes, `unsubscribe` and
    /// `unsubscribed`, unavailable presence), and every module and component forgets it
    /// (`on_account_removed`: chat room affiliations).
    ///
    /// `requester` is a session of the account asking for its own removal: it is left open so
    /// that it receives the answer first (XEP-0077 §3.2); the caller ends it afterwards.
    pub async fn remove_account(
        &mut self,
        user: &BareJid,
        requester: Option<&FullJid>,
    ) -> Result<AccountRemoval, StorageError> {
        // Taken before the sessions end: whoever received their presence must see it end.
        let online: Vec<FullJid> = (self.resources(user).into_iter())
            .filter(|r| r.available)
            .map(|r| r.jid)
            .collect();
        let removal = remove_stored_account(
            self.store().as_ref(),
            &user_ref(user),
            self.config().tombstone,
        )
        .await?;
        for r in self.resources(user) {
            if requester != Some(&r.jid) {
                let text = Some("Account removed");
                (self.sessions()).close(r.session, StreamErrorCondition::NotAuthorized, text);
            }
        }
        let server = self.server().clone();
        for m in server.modules() {
            m.on_account_removal(self, user, &removal, &online).await;
        }
        for m in server.modules() {
            m.on_account_removed(self, user).await;
        }
        for (_, c) in server.component_domains() {
            c.on_account_removed(self, user).await;
        }
        tracing::info!(
            jid = %user,
            contacts = removal.contacts.len(),
            rooms = removal.rooms.len(),
            "account removed"
        );
        Ok(removal)
    }
}

/// What [`Context::remove_account`] does in storage, for when no server runs (the command
/// line): removes the account and its footprint in others' data, and keeps its name from being
/// registered again for `tombstone` (zero: not at all).
pub async fn remove_stored_account(
    store: &dyn CredentialStore,
    user: &UserRef,
    tombstone: Duration,
) -> Result<AccountRemoval, StorageError> {
    let keep_ms = i64::try_from(tombstone.as_millis()).unwrap_or(i64::MAX);
    let until = (keep_ms > 0).then(|| stanza::now_ms().saturating_add(keep_ms));
    store.remove_account(user, until).await
}
