//! [`Blocking`]: the blocking command (XEP-0191) as a core module.
//!
//! - The `urn:xmpp:blocking` IQs of an account's own sessions (no `to`, or the account's bare
//!   JID, or its server): the list, block, unblock and unblock-all, stored before they are
//!   answered; each change is then pushed to the account's resources that asked for the list
//!   (§3.3–§3.5), after the answer.
//! - On block, the user's available resources send unavailable presence to the newly blocked
//!   contacts that had their presence: subscribers and those sent directed presence (§3.3),
//!   and those contacts' subscription requests kept for the user's login are dropped; on
//!   unblock, their current presence goes to the subscribers now unblocked (§3.4).
//! - What the user sends to a blocked JID is refused with `<not-acceptable/>` and
//!   `<blocked xmlns='urn:xmpp:blocking:errors'/>` (§3.3): messages, presence and IQ requests
//!   as the session sends them; presence the server sends on the user's behalf (broadcast,
//!   answers to probes) and IQ answers are dropped where they reach the blocked account.
//! - What a blocked entity sends to the user (§3.3): presence (subscriptions and probes
//!   included) is dropped without an answer; messages bounce with `<service-unavailable/>`
//!   (groupchat messages are dropped: an error to a room could cost the user its seat); IQ
//!   requests get `<service-unavailable/>`, other IQs are dropped.
//! - A `<report/>` (XEP-0377) in a block item goes to the configured administrators
//!   ([`crate::report`]).
//!
//! The user's own account and own server are never blocked: a list naming them would cut the
//! user off from their own resources and from the server's services.
//!
//! Lists are read once and kept while the account has sessions; every change goes through
//! here, storage first, under one lock, so the kept copy never falls behind storage.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::hash::{DashMap, DashSet};
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{self, Condition, StanzaError, NS_CLIENT};
use xmppd_core::{user_ref, Addressing, ClientSession, Context, PresenceState, SessionId};
use xmppd_storage::Subscription;

use crate::list::BlockList;
use crate::payload::{self, Accepted, Request, NS_BLOCKING, NS_REPORTING};
use crate::report::{admin_message, Quota, ReportLimit};
use crate::store::BlockStore;

/// Settings of the blocking module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Items one block list may hold; a block beyond it is refused with `<policy-violation/>`.
    pub max_items: usize,
    /// Reports passed on to the administrators per reporter.
    pub reports: ReportLimit,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            max_items: 5000,
            reports: ReportLimit::default(),
        }
    }
}

/// Entities one session's directed presence is remembered for (as many as the IM module
/// remembers to send unavailable to).
const MAX_DIRECTED: usize = 1000;

/// The blocking command module.
pub struct Blocking {
    store: Arc<dyn BlockStore>,
    settings: Settings,
    /// The accounts whose list has an item, read from storage once (`None` if that failed:
    /// then every account's list is read). Most accounts block nobody: they cost neither a
    /// kept list nor a storage read.
    owners: tokio::sync::OnceCell<Option<DashSet<BareJid>>>,
    /// Lists of accounts with sessions, consulted for every stanza to or from them.
    lists: DashMap<BareJid, Arc<BlockList>>,
    /// The list of every account that blocks nobody.
    empty: Arc<BlockList>,
    /// Changes one at a time: storage, then the kept copy.
    edits: tokio::sync::Mutex<()>,
    /// Sessions that asked for the list (§3.2: the "interested resources" pushes go to).
    interested: DashMap<FullJid, SessionId>,
    /// Entities each session sent directed available presence to, which get unavailable
    /// presence when blocked (§3.3).
    directed: DashMap<FullJid, HashSet<Jid>>,
    quota: Quota,
}

impl Blocking {
    pub fn new(store: Arc<dyn BlockStore>, settings: Settings) -> Blocking {
        Blocking {
            store,
            settings,
            owners: tokio::sync::OnceCell::new(),
            lists: DashMap::default(),
            empty: Arc::default(),
            edits: tokio::sync::Mutex::new(()),
            interested: DashMap::default(),
            directed: DashMap::default(),
            quota: Quota::new(settings.reports),
        }
    }

    /// `user`'s list: the kept copy, or storage's (kept if the account has sessions). A list
    /// that cannot be read blocks nothing: losing messages to a storage fault is worse.
    async fn list(&self, cx: &Context<'_>, user: &BareJid) -> Arc<BlockList> {
        if let Some(l) = self.lists.get(user) {
            return l.clone();
        }
        if let Some(owners) = self.owners().await {
            if !owners.contains(user) {
                return self.empty.clone();
            }
        }
        let items = match self.store.items(user.as_str()).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(error = %e, user = %user, "could not read a block list");
                return Arc::default();
            }
        };
        let list = Arc::new(BlockList::new(
            items.iter().filter_map(|s| Jid::new(s).ok()),
        ));
        if cx.resources(user).is_empty() {
            return list;
        }
        // A change made meanwhile has put the newer list in place: it stays.
        self.lists.entry(user.clone()).or_insert(list).clone()
    }

    /// The accounts whose list has an item, read on first use; none if storage failed.
    async fn owners(&self) -> Option<&DashSet<BareJid>> {
        let read = || async {
            match self.store.owners().await {
                Ok(owners) => Some(owners.iter().filter_map(|o| BareJid::new(o).ok()).collect()),
                Err(e) => {
                    tracing::error!(error = %e, "could not read which accounts block anyone");
                    None
                }
            }
        };
        self.owners.get_or_init(read).await.as_ref()
    }

    /// Whether `user`'s list blocks `other` (never the user's own account or server).
    async fn blocks(&self, cx: &Context<'_>, user: &BareJid, other: &Jid) -> bool {
        let list = self.list(cx, user).await;
        !list.is_empty() && !own(user, other) && list.blocks(other)
    }

    /// The account of a local address, for the checks made on behalf of the sender.
    fn local_account(cx: &Context<'_>, jid: &Jid) -> Option<BareJid> {
        (jid.node().is_some() && cx.is_local_host(jid.domain().as_str())).then(|| jid.bare())
    }

    /// Applies a change to `user`'s list under the edit lock: storage first, then the kept
    /// copy. `change` returns the new list and what to write.
    async fn edit(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
        change: impl FnOnce(&mut BlockList) -> Result<Write, StanzaError>,
    ) -> Result<Vec<Jid>, StanzaError> {
        let _one_at_a_time = self.edits.lock().await;
        let mut list = (*self.list(cx, user).await).clone();
        let write = change(&mut list)?;
        let owner = user.as_str();
        let (stored, changed) = match write {
            Write::Add(added) => {
                let strings = added.iter().map(|j| j.to_string()).collect();
                (self.store.add(owner, strings).await, added)
            }
            Write::Remove(gone) => {
                let strings = gone.iter().map(|j| j.to_string()).collect();
                (self.store.remove(owner, Some(strings)).await, gone)
            }
            Write::Clear(gone) => (self.store.remove(owner, None).await, gone),
        };
        if let Err(e) = stored {
            tracing::error!(error = %e, user = %user, "could not store a block list change");
            let mut err = StanzaError::new(Condition::InternalServerError);
            err.kind = stanza::ErrorType::Wait;
            return Err(err);
        }
        if let Some(owners) = self.owners().await {
            if list.is_empty() {
                owners.remove(user);
            } else {
                owners.insert(user.clone());
            }
        }
        self.lists.insert(user.clone(), Arc::new(list));
        Ok(changed)
    }

    async fn block(
        &self,
        cx: &mut Context<'_>,
        user: &BareJid,
        items: Vec<payload::Item>,
    ) -> Result<(), StanzaError> {
        if items.is_empty() {
            // §3.3: a block names at least one JID.
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "a block needs at least one item",
            ));
        }
        let (jids, reports) = payload::parse_items(items)?;
        let max = self.settings.max_items;
        let added = self
            .edit(cx, user, |list| {
                let added = list.add(jids);
                if list.len() > max {
                    let text = format!("a block list holds at most {max} items");
                    return Err(StanzaError::with_text(Condition::PolicyViolation, text));
                }
                Ok(Write::Add(added))
            })
            .await?;
        self.forward_reports(cx, user, &reports);
        self.unavailable_to(cx, user, &added).await;
        self.forget_requests(cx, user, &added).await;
        Ok(())
    }

    /// Subscription requests from contacts `added` blocks, kept for the user's next login
    /// (RFC 6121 §3.1.3), are dropped: a blocked contact's presence never reaches the user.
    async fn forget_requests(&self, cx: &Context<'_>, user: &BareJid, added: &[Jid]) {
        if added.is_empty() {
            return;
        }
        let added = BlockList::new(added.iter().cloned());
        let uref = user_ref(user);
        let pending = match cx.store().pending_subscriptions(&uref).await {
            Ok(pending) => pending,
            Err(e) => {
                tracing::error!(error = %e, user = %user, "could not read subscription requests");
                return;
            }
        };
        for (contact, _) in pending {
            let blocked = Jid::new(&contact).is_ok_and(|c| added.blocks(&c) && !own(user, &c));
            if blocked {
                if let Err(e) = cx
                    .store()
                    .remove_pending_subscription(&uref, &contact)
                    .await
                {
                    tracing::error!(error = %e, user = %user, "could not drop a subscription request");
                }
            }
        }
    }

    async fn unblock(
        &self,
        cx: &mut Context<'_>,
        user: &BareJid,
        items: Vec<payload::Item>,
    ) -> Result<(), StanzaError> {
        let removed = if items.is_empty() {
            self.edit(cx, user, |list| Ok(Write::Clear(list.clear())))
                .await?
        } else {
            let (jids, _) = payload::parse_items(items)?;
            self.edit(cx, user, |list| Ok(Write::Remove(list.remove(&jids))))
                .await?
        };
        self.presence_to_unblocked(cx, user, &removed).await;
        Ok(())
    }

    /// XEP-0377: each report to every configured administrator, within the reporter's quota.
    fn forward_reports(&self, cx: &mut Context<'_>, reporter: &BareJid, reports: &[Accepted]) {
        for report in reports {
            if !self.quota.admit(reporter, cx.now_ms()) {
                tracing::info!(reporter = %reporter, reported = %report.jid,
                    "report not passed on: the reporter's quota is used up");
                continue;
            }
            tracing::info!(reporter = %reporter, reported = %report.jid, spam = report.spam,
                "report passed on to the administrators");
            let admins: Vec<Jid> = (cx.config().admins.iter())
                .filter_map(|a| Jid::new(a).ok())
                .collect();
            for admin in admins {
                let id = cx.next_id();
                cx.send(admin_message(reporter, &admin, report, id));
            }
        }
    }

    /// Subscribers whose address one of `items` matches: from the stored roster, and the
    /// items modules contribute (shared groups), which count as mutual subscriptions.
    async fn subscribers_matching(
        &self,
        cx: &Context<'_>,
        user: &BareJid,
        items: &BlockList,
    ) -> Vec<Jid> {
        let mut subscribers: Vec<String> = match cx.store().roster(&user_ref(user)).await {
            Ok((_, roster)) => (roster.into_iter())
                .filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
                .map(|i| i.jid)
                .collect(),
            Err(e) => {
                tracing::error!(error = %e, user = %user, "could not read the roster");
                Vec::new()
            }
        };
        for m in cx.roster_modules() {
            subscribers.extend(m.roster_items(cx, user).await.into_iter().map(|i| i.jid));
        }
        subscribers.sort();
        subscribers.dedup();
        (subscribers.iter())
            .filter_map(|s| Jid::new(s).ok())
            .filter(|j| items.blocks(j) && !own(user, j))
            .collect()
    }

    /// §3.3: unavailable presence from each available resource of `user` to the contacts
    /// `added` now blocks that had its presence. Delivered straight to local accounts'
    /// sessions, since routing would now drop it; routed to anything else (a room).
    async fn unavailable_to(&self, cx: &mut Context<'_>, user: &BareJid, added: &[Jid]) {
        let online: Vec<FullJid> = (cx.resources(user).into_iter())
            .filter(|r| r.available)
            .map(|r| r.jid)
            .collect();
        if added.is_empty() || online.is_empty() {
            return;
        }
        let added = BlockList::new(added.iter().cloned());
        let subscribers = self.subscribers_matching(cx, user, &added).await;
        for from in online {
            let mut targets = subscribers.clone();
            if let Some(mut directed) = self.directed.get_mut(&from) {
                directed.retain(|t| {
                    let hit = added.blocks(t) && !own(user, t);
                    if hit && !targets.contains(t) {
                        targets.push(t.clone());
                    }
                    !hit
                });
            }
            for to in targets {
                let pres = stanza::elem(
                    "presence",
                    NS_CLIENT,
                    &[
                        ("type", "unavailable"),
                        ("from", from.as_str()),
                        ("to", to.as_str()),
                    ],
                );
                match Self::local_account(cx, &to) {
                    Some(contact) => {
                        if self.blocks(cx, &contact, &Jid::from(from.clone())).await {
                            continue;
                        }
                        for r in cx.resources(&contact).into_iter().filter(|r| r.available) {
                            if to.resource().is_none() || to.as_str() == r.jid.as_str() {
                                cx.deliver(&r.jid, pres.clone());
                            }
                        }
                    }
                    None => cx.send(pres),
                }
            }
        }
    }

    /// §3.4: the current presence of each available resource of `user` to the subscribers
    /// `removed` no longer blocks. Routed, so one still blocked by another item gets nothing.
    async fn presence_to_unblocked(&self, cx: &mut Context<'_>, user: &BareJid, removed: &[Jid]) {
        let presences: Vec<Arc<Element>> = (cx.resources(user).into_iter())
            .filter(|r| r.available)
            .filter_map(|r| r.presence)
            .collect();
        if removed.is_empty() || presences.is_empty() {
            return;
        }
        let removed = BlockList::new(removed.iter().cloned());
        for to in self.subscribers_matching(cx, user, &removed).await {
            for p in &presences {
                let mut p = (**p).clone();
                stanza::set_attr(&mut p, "to", to.as_str());
                cx.send(p);
            }
        }
    }

    /// The pushes of a change the answer to `iq` confirmed, to the interested resources.
    fn push(&self, cx: &mut Context<'_>, user: &BareJid, payload: Element) {
        for r in cx.resources(user) {
            if self.interested.get(&r.jid).is_some_and(|s| *s == r.session) {
                let id = format!("block-push{}", cx.next_id());
                let iq = stanza::iq_push(r.jid.as_str(), &id, payload.clone());
                cx.deliver(&r.jid, iq);
            }
        }
    }
}

/// What a change writes.
enum Write {
    Add(Vec<Jid>),
    Remove(Vec<Jid>),
    Clear(Vec<Jid>),
}

/// `other` is `user`'s own account or server.
fn own(user: &BareJid, other: &Jid) -> bool {
    match other.node() {
        Some(_) => other.bare() == *user,
        None => other.resource().is_none() && other.domain() == user.domain(),
    }
}

/// `stanza`'s sender and addressee (for a message, as the core parsed them).
fn addresses(cx: &Context<'_>, stanza: &Element) -> Option<(Jid, Jid)> {
    cx.addressing(stanza).map(|a| {
        let a = a.into_owned();
        (a.from, a.to)
    })
}

/// The account whose list an IQ of the blocking namespace is about: the sender's, when it
/// asks its own account or its own server.
fn owner(req: &IqRequest) -> Option<BareJid> {
    let user = req.from.bare();
    (req.from.node().is_some() && own(&user, &req.to)).then_some(user)
}

#[async_trait]
impl Module for Blocking {
    fn name(&self) -> &'static str {
        "blocking"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            message_out: true,
            message_check: true,
            presence_in: true,
            iq_in: true,
            presence_out: true,
            iq_out: true,
            ..Hooks::NONE
        }
    }

    /// §3.1 on the server, and on the account, where clients look for its services too;
    /// XEP-0377 §3 for the reports.
    fn server_features(&self) -> Vec<String> {
        vec![NS_BLOCKING.to_owned(), NS_REPORTING.to_owned()]
    }

    fn account_features(&self) -> Vec<String> {
        self.server_features()
    }

    fn server_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_BLOCKING]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_BLOCKING]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let Some(user) = owner(&req) else {
            return Err(StanzaError::new(Condition::Forbidden));
        };
        match payload::parse_request(&req.payload, req.kind == IqKind::Set)? {
            Request::List => {
                if let Ok(full) = req.from.try_as_full() {
                    let session = cx.resources(&user).into_iter().find(|r| &r.jid == full);
                    if let Some(r) = session {
                        self.interested.insert(r.jid, r.session);
                    }
                }
                let list = self.list(cx, &user).await;
                Ok(Some(payload::blocklist(list.items())))
            }
            Request::Block(items) => self.block(cx, &user, items).await.map(|()| None),
            Request::Unblock(items) => self.unblock(cx, &user, items).await.map(|()| None),
        }
    }

    /// The push follows the answer (§3.3), with the items as the request named them.
    async fn after_reply(&self, cx: &mut Context<'_>, iq: &Element) {
        let Some((from, _)) = addresses(cx, iq) else {
            return;
        };
        let Some(payload) = iq.children().next() else {
            return;
        };
        let (block, items) = match payload::parse_request(payload, true) {
            Ok(Request::Block(items)) => (true, items),
            Ok(Request::Unblock(items)) => (false, items),
            _ => return,
        };
        if let Ok((jids, _)) = payload::parse_items(items) {
            self.push(cx, &from.bare(), payload::push_payload(block, jids));
        }
    }

    async fn on_message_out(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let blocked = match cx.addressing(msg) {
            Some(a) => self.blocks(cx, &a.from.bare(), &a.to).await,
            None => false,
        };
        if blocked {
            HookAction::Stop(Some(payload::blocked_error()))
        } else {
            HookAction::Continue
        }
    }

    async fn check_message_in(
        &self,
        cx: &mut Context<'_>,
        msg: &Element,
        addressing: &Addressing,
    ) -> HookAction {
        let Addressing { from, to } = addressing;
        if !self.blocks(cx, &to.bare(), from).await {
            HookAction::Continue
        } else if msg.attr("type") == Some("groupchat") {
            HookAction::Stop(None)
        } else {
            HookAction::Stop(Some(StanzaError::new(Condition::ServiceUnavailable)))
        }
    }

    async fn on_presence_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        _state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        let user = session.jid.bare();
        let kind = pres.attr("type");
        let Some(to) = pres.attr("to").and_then(|t| Jid::new(t).ok()) else {
            if kind == Some("unavailable") {
                // Unavailable presence goes to the directed-presence targets and ends it.
                self.directed.remove(&session.jid);
            }
            return HookAction::Continue;
        };
        if self.blocks(cx, &user, &to).await {
            return HookAction::Stop(Some(payload::blocked_error()));
        }
        match kind {
            None => {
                let mut directed = self.directed.entry(session.jid.clone()).or_default();
                if directed.len() < MAX_DIRECTED {
                    directed.insert(to);
                }
            }
            Some("unavailable") => {
                if let Some(mut directed) = self.directed.get_mut(&session.jid) {
                    directed.remove(&to);
                }
            }
            _ => {}
        }
        HookAction::Continue
    }

    async fn on_presence_in(&self, cx: &mut Context<'_>, pres: &mut Element) -> HookAction {
        let Some((from, to)) = addresses(cx, pres) else {
            return HookAction::Continue;
        };
        if self.blocks(cx, &to.bare(), &from).await {
            return HookAction::Stop(None);
        }
        // Presence the server sends on a user's behalf: broadcasts, answers to probes.
        if let Some(sender) = Self::local_account(cx, &from) {
            if self.blocks(cx, &sender, &to).await {
                return HookAction::Stop(None);
            }
        }
        HookAction::Continue
    }

    async fn on_iq_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        iq: &mut Element,
    ) -> HookAction {
        match iq.attr("to").and_then(|t| Jid::new(t).ok()) {
            Some(to) if self.blocks(cx, &session.jid.bare(), &to).await => {
                HookAction::Stop(Some(payload::blocked_error()))
            }
            _ => HookAction::Continue,
        }
    }

    async fn on_iq_in(&self, cx: &mut Context<'_>, iq: &mut Element) -> HookAction {
        let Some((from, to)) = addresses(cx, iq) else {
            return HookAction::Continue;
        };
        let request = matches!(iq.attr("type"), Some("get" | "set"));
        if self.blocks(cx, &to.bare(), &from).await {
            let err = request.then(|| StanzaError::new(Condition::ServiceUnavailable));
            return HookAction::Stop(err);
        }
        // The user's answers to a blocked entity's earlier requests. Not errors: the bounce
        // of a blocked entity's request carries the user's address too, and must reach it.
        let error = iq.attr("type") == Some("error");
        if let Some(sender) = Self::local_account(cx, &from).filter(|_| !error) {
            if self.blocks(cx, &sender, &to).await {
                return HookAction::Stop(request.then(payload::blocked_error));
            }
        }
        HookAction::Continue
    }

    async fn on_presence_end(
        &self,
        _cx: &mut Context<'_>,
        jid: &FullJid,
        _session_id: SessionId,
        _state: &mut PresenceState,
    ) {
        self.directed.remove(jid);
    }

    async fn on_session_closed(&self, cx: &mut Context<'_>, jid: &FullJid) {
        self.interested.remove(jid);
        self.directed.remove(jid);
        let user = jid.bare();
        if cx.resources(&user).is_empty() {
            self.lists.remove(&user);
        }
    }

    async fn on_account_removed(&self, _cx: &mut Context<'_>, user: &BareJid) {
        let _one_at_a_time = self.edits.lock().await;
        self.lists.remove(user);
        if let Some(owners) = self.owners().await {
            owners.remove(user);
        }
        self.quota.forget(user);
        if let Err(e) = self.store.remove(user.as_str(), None).await {
            tracing::error!(error = %e, user = %user, "could not delete a removed account's block list");
        }
    }
}
