//! [`Push`]: push notifications (XEP-0357) as a core module.
//!
//! - The `urn:xmpp:push:0` IQs of an account's own sessions (to its bare JID, or no `to`):
//!   `<enable/>` stores a registration (app server JID, node, publish options) under the
//!   account, with the resource that enabled it; enabling the same app server and node again
//!   replaces it; `<disable/>` removes one node or every node of an app server. Stored before
//!   they are answered. An account keeps at most [`Settings::max_per_account`]; a newer one
//!   replaces the oldest (a reinstalled app registers anew and cannot disable what it lost).
//! - When a message worth it ([`crate::payload::notifies`]) reaches an account with
//!   registrations, a notification is published to the app servers (§7):
//!   - it goes to offline storage (no session takes it): every registration of the account;
//!   - it is queued for a session that stream management parked (its connection lost, waiting
//!     for a resumption): the registrations that session's resource enabled.
//!
//!   The publish comes from the account's bare JID, so its answer comes back to the account,
//!   where `on_iq_in` takes it. The summary carries the count, and the sender and body only
//!   when the operator allows ([`Settings::disclose`]).
//! - How often and for how long ([`crate::tracker`]): one unanswered notification per
//!   registration, failures counted, final errors remove at once.
//! - The registrations go with the account (`on_account_removed`).
//!
//! Registrations are read from storage once, at the first message or request, and kept
//! current: every change goes through here, storage first, under one lock.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::data_forms::DataForm;
use xmppd_core::address::Bare;
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{Condition, StanzaError};
use xmppd_core::Context;

use crate::payload::{self, Disclose, Request, Summary, NS_PUSH};
use crate::store::{PushStore, StoredRegistration};
use crate::tracker::{AfterAnswer, Decision, Key, Tracker};

/// Settings of the push module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// What a notification tells beyond the count.
    pub disclose: Disclose,
    /// Failures in a row after which a registration is removed.
    pub max_errors: u32,
    /// Registrations one account keeps.
    pub max_per_account: usize,
    /// How long an app server has to answer before the silence counts as a failure (ms).
    pub answer_timeout_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            disclose: Disclose::default(),
            max_errors: 3,
            max_per_account: 32,
            answer_timeout_ms: 60_000,
        }
    }
}

/// One registration, as kept.
#[derive(Debug, Clone)]
struct Registration {
    jid: Jid,
    node: String,
    form: Option<DataForm>,
    resource: String,
}

impl Registration {
    fn key(&self, owner: &BareJid) -> Key {
        Key {
            owner: owner.clone(),
            jid: self.jid.to_string(),
            node: self.node.clone(),
        }
    }

    fn from_stored(r: StoredRegistration) -> Option<(BareJid, Registration)> {
        let owner = BareJid::new(&r.owner).ok()?;
        let form = match r.form.map(|f| f.parse::<Element>().map(DataForm::try_from)) {
            None => None,
            Some(Ok(Ok(form))) => Some(form),
            Some(_) => {
                tracing::warn!(owner = %owner, "a stored push registration's form is unreadable");
                None
            }
        };
        let reg = Registration {
            jid: Jid::new(&r.jid).ok()?,
            node: r.node,
            form,
            resource: r.resource,
        };
        Some((owner, reg))
    }
}

/// Every account's registrations, in the order they were enabled.
type Registrations = DashMap<BareJid, Arc<Vec<Registration>>>;

/// The push notifications module.
pub struct Push {
    store: Arc<dyn PushStore>,
    settings: Settings,
    registrations: tokio::sync::OnceCell<Registrations>,
    /// Changes one at a time: storage, then the kept copy.
    edits: tokio::sync::Mutex<()>,
    tracker: Mutex<Tracker>,
}

impl Push {
    pub fn new(store: Arc<dyn PushStore>, settings: Settings) -> Push {
        let tracker = Tracker::new(settings.max_errors, settings.answer_timeout_ms);
        Push {
            store,
            settings,
            registrations: tokio::sync::OnceCell::new(),
            edits: tokio::sync::Mutex::new(()),
            tracker: Mutex::new(tracker),
        }
    }

    fn tracker(&self) -> MutexGuard<'_, Tracker> {
        self.tracker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every registration, read on first use (again at the next use if that failed).
    async fn all(&self) -> Result<&Registrations, StanzaError> {
        let read = || async {
            let stored = self.store.all().await?;
            let all = Registrations::new();
            for (owner, reg) in stored.into_iter().filter_map(Registration::from_stored) {
                let mut entry = all.entry(owner).or_default();
                Arc::make_mut(&mut entry).push(reg);
            }
            Ok::<_, xmppd_storage::StorageError>(all)
        };
        self.registrations.get_or_try_init(read).await.map_err(|e| {
            tracing::error!(error = %e, "could not read the push registrations");
            StanzaError::new(Condition::InternalServerError)
        })
    }

    async fn registrations(&self, owner: &BareJid) -> Option<Arc<Vec<Registration>>> {
        let all = self.all().await.ok()?;
        all.get(owner).map(|r| r.clone())
    }

    /// Applies `f` to `owner`'s kept registrations (after storage changed).
    fn edit(all: &Registrations, owner: &BareJid, f: impl FnOnce(&mut Vec<Registration>)) {
        let mut entry = all.entry(owner.clone()).or_default();
        f(Arc::make_mut(&mut entry));
        let empty = entry.is_empty();
        drop(entry);
        if empty {
            all.remove_if(owner, |_, r| r.is_empty());
        }
    }

    async fn enable(
        &self,
        owner: &BareJid,
        session: &FullJid,
        jid: Jid,
        node: String,
        form: Option<DataForm>,
    ) -> Result<(), StanzaError> {
        let all = self.all().await?;
        let _edit = self.edits.lock().await;
        let stored = StoredRegistration {
            owner: owner.to_string(),
            jid: jid.to_string(),
            node: node.clone(),
            form: form.clone().map(|f| String::from(&Element::from(f))),
            resource: session.resource().to_string(),
        };
        (self
            .store
            .enable(stored, self.settings.max_per_account)
            .await)
            .map_err(storage)?;
        let reg = Registration {
            jid,
            node,
            form,
            resource: session.resource().to_string(),
        };
        let key = reg.key(owner);
        let max = self.settings.max_per_account;
        let mut dropped = Vec::new();
        Self::edit(all, owner, |regs| {
            regs.retain(|r| r.key(owner) != key);
            regs.push(reg);
            let over = regs.len().saturating_sub(max);
            dropped.extend(regs.drain(..over).map(|r| r.key(owner)));
        });
        let mut tracker = self.tracker();
        // Enabled anew: a fresh start, with no failures held against it.
        tracker.forget(&key);
        dropped.iter().for_each(|k| tracker.forget(k));
        Ok(())
    }

    async fn disable(
        &self,
        owner: &BareJid,
        jid: &Jid,
        node: Option<String>,
    ) -> Result<(), StanzaError> {
        let all = self.all().await?;
        let _edit = self.edits.lock().await;
        let (jid, owner_str) = (jid.to_string(), owner.to_string());
        (self.store.disable(&owner_str, &jid, node.clone()).await).map_err(storage)?;
        let gone = |k: &Key| {
            k.owner == *owner && k.jid == jid && node.as_ref().is_none_or(|n| *n == k.node)
        };
        Self::edit(all, owner, |regs| regs.retain(|r| !gone(&r.key(owner))));
        self.tracker().forget_where(gone);
        Ok(())
    }

    /// Removes the registration `key`, which its app server no longer takes.
    async fn remove(&self, key: &Key) {
        tracing::info!(owner = %key.owner, app_server = %key.jid, "push registration removed after errors");
        let Ok(jid) = Jid::new(&key.jid) else { return };
        if let Err(e) = self.disable(&key.owner, &jid, Some(key.node.clone())).await {
            tracing::error!(error = ?e, "could not remove a push registration");
        }
    }

    /// Notifies the registrations of `owner` that `which` selects about `msg`.
    async fn notify(
        &self,
        cx: &mut Context<'_>,
        owner: &BareJid,
        msg: &Element,
        which: impl Fn(&Registration) -> bool,
    ) {
        let Some(regs) = self.registrations(owner).await else {
            return;
        };
        let now = cx.now_ms();
        for reg in regs.iter().filter(|r| which(r)) {
            let key = reg.key(owner);
            let summary = Summary::of(msg, 1, self.settings.disclose);
            let next_id = || format!("push-{}", cx.next_id());
            let decision = self.tracker().message(&key, summary, now, next_id);
            match decision {
                Decision::Send(id, summary) => cx.send(self.publish(owner, reg, &id, &summary)),
                Decision::Coalesced => {}
                Decision::Remove => self.remove(&key).await,
            }
        }
    }

    fn publish(&self, owner: &BareJid, reg: &Registration, id: &str, s: &Summary) -> Element {
        let (from, to) = (owner.as_str(), reg.jid.as_str());
        payload::publish(id, from, to, &reg.node, s, reg.form.clone())
    }
}

fn storage(e: xmppd_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "could not store a push registration");
    StanzaError::new(Condition::InternalServerError)
}

#[async_trait]
impl Module for Push {
    fn name(&self) -> &'static str {
        "push"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            undeliverable: true,
            delivered: true,
            iq_in: true,
            ..Hooks::NONE
        }
    }

    fn account_features(&self) -> Vec<String> {
        vec![NS_PUSH.to_owned()]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_PUSH]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let _ = cx;
        let owner = req.to.bare();
        // Only the account's own sessions manage its registrations (XEP-0357 §5).
        let session = match req.from.try_as_full() {
            Ok(full) if full.bare() == owner => full.clone(),
            _ => return Err(StanzaError::new(Condition::Forbidden)),
        };
        if req.kind != IqKind::Set {
            return Err(StanzaError::new(Condition::BadRequest));
        }
        let request = payload::parse_request(&req.payload)
            .map_err(|why| StanzaError::with_text(Condition::BadRequest, why))?;
        match request {
            Request::Enable { jid, node, form } => {
                self.enable(&owner, &session, jid, node, form).await?
            }
            Request::Disable { jid, node } => self.disable(&owner, &jid, node).await?,
        }
        Ok(None)
    }

    async fn on_undeliverable(
        &self,
        cx: &mut Context<'_>,
        msg: &Element,
    ) -> Result<bool, StanzaError> {
        // Runs before offline storage takes the message; what is sent here is routed once
        // every hook has run, so after the message was stored.
        if payload::notifies(msg) {
            let owner = msg.attr("to").and_then(|t| Jid::new(t).ok());
            if let Some(owner) = owner.map(|o| o.bare()) {
                self.notify(cx, &owner, msg, |_| true).await;
            }
        }
        Ok(false)
    }

    async fn on_message_delivered(&self, cx: &mut Context<'_>, msg: &Element, targets: &[FullJid]) {
        // Only a session that stream management keeps while its client is away is notified:
        // most messages reach none, and are done with before the account's registrations are
        // looked up.
        if !payload::notifies(msg) {
            return;
        }
        let parked: Vec<&FullJid> = targets.iter().filter(|t| cx.is_detached(t)).collect();
        let Some(owner) = parked.first().map(|t| t.bare()) else {
            return;
        };
        if self.registrations(&owner).await.is_none() {
            return;
        }
        let enabled_by_parked =
            |r: &Registration| parked.iter().any(|t| t.resource().as_str() == r.resource);
        self.notify(cx, &owner, msg, enabled_by_parked).await;
    }

    async fn on_iq_in(&self, cx: &mut Context<'_>, iq: &mut Element) -> HookAction {
        if !matches!(iq.attr("type"), Some("result" | "error")) {
            return HookAction::Continue;
        }
        let (Some(id), Some(from), Some(to)) = (iq.attr("id"), iq.attr("from"), iq.attr("to"))
        else {
            return HookAction::Continue;
        };
        let Ok(to) = BareJid::new(to) else {
            return HookAction::Continue;
        };
        if self.tracker().matches(id, from, &to).is_none() {
            return HookAction::Continue;
        }
        let answer = payload::answer(iq);
        let next_id = || format!("push-{}", cx.next_id());
        let (after, key) = {
            let mut tracker = self.tracker();
            let key = tracker.matches(id, from, &to).cloned();
            (tracker.answered(id, answer, cx.now_ms(), next_id), key)
        };
        let Some(key) = key else {
            return HookAction::Stop(None);
        };
        match after {
            AfterAnswer::Done => {}
            AfterAnswer::Remove => self.remove(&key).await,
            AfterAnswer::Send(id, summary) => {
                let regs = self.registrations(&key.owner).await;
                let reg = regs
                    .as_ref()
                    .and_then(|rs| rs.iter().find(|r| r.key(&key.owner) == key));
                if let Some(reg) = reg {
                    cx.send(self.publish(&key.owner, reg, &id, &summary));
                }
            }
        }
        // An answer to our own request: nobody else is waiting for it.
        HookAction::Stop(None)
    }

    async fn on_account_removed(&self, cx: &mut Context<'_>, user: &BareJid) {
        let _ = cx;
        let _edit = self.edits.lock().await;
        if let Err(e) = self.store.remove_owner(user.as_str()).await {
            tracing::error!(error = %e, user = %user, "could not remove push registrations");
        }
        if let Some(all) = self.registrations.get() {
            all.remove(user);
        }
        self.tracker().forget_where(|k| k.owner == *user);
    }
}
