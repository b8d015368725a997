//! Personal eventing (XEP-0163): a pubsub service on every account's bare JID, as a core
//! module. The account owns its nodes; a publish creates the node. Notifications go to the
//! owner's resources and to the contacts with a presence subscription to the owner, each
//! resource only for the nodes its entity capabilities ask for (`NODE+notify`, §4.2), and to
//! those who subscribed explicitly. A resource that comes online with, or newly shows,
//! interest in a node gets its last item (§4.3.4).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock, Weak};

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmpp_parsers::caps::Caps;
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use xmpp_parsers::ns;
use xmppd_core::address::Bare;
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{Condition, StanzaError, NS_CLIENT};
use xmppd_core::{user_ref, ClientSession, Context, PresenceState};
use xmppd_storage::Subscription;

use crate::caps::{self, CapsCache, Interest};
use crate::config::{AccessModel, Affiliation};
use crate::engine::{items_event, notification, notification_of, Engine, Event, Scope};

/// The features only an account's personal eventing service has (XEP-0060 §11), besides
/// [`crate::engine::FEATURES`]; `pubsub-on-a-jid` says the account is one (§9).
const PEP_FEATURES: &[&str] = &[
    "auto-subscribe",
    "filtered-notifications",
    "last-published",
    "pubsub-on-a-jid",
];

/// Prefix of the ids of the capability queries sent to clients.
const CAPS_ID: &str = "pep-caps-";

/// A service that keeps data of its own in step with an account's nodes (XEP-0398 avatars,
/// XEP-0402 bookmarks): told after a request of the account changed a node.
#[async_trait]
pub trait PepWatcher: Send + Sync {
    /// `node` of `owner` was published to, retracted from, purged or deleted by a request of
    /// the account (not by [`Pep::request_as_owner`]); it reads the node's state anew.
    async fn on_node_changed(&self, cx: &mut Context<'_>, owner: &BareJid, node: &str);
}

/// Personal eventing on every account.
pub struct Pep {
    engine: Arc<Engine>,
    caps: CapsCache,
    /// What each available session wants notifications of, local or remote.
    interest: Mutex<HashMap<FullJid, Interest>>,
    /// The available resources of remote contacts, as their presence to accounts here says
    /// (their own server has their sessions): by bare JID, each with the accounts here it
    /// is available to.
    remote: Mutex<HashMap<BareJid, HashMap<FullJid, HashSet<BareJid>>>>,
    watchers: RwLock<Vec<Weak<dyn PepWatcher>>>,
}

impl Pep {
    /// `cache` bounds the verified capabilities kept, and the queries in flight.
    pub fn new(engine: Arc<Engine>, cache: usize) -> Pep {
        Pep {
            engine,
            caps: CapsCache::new(cache),
            interest: Mutex::new(HashMap::new()),
            remote: Mutex::new(HashMap::new()),
            watchers: RwLock::new(Vec::new()),
        }
    }

    /// Tells `watcher` of the changes the accounts' own requests make from now on.
    pub fn watch(&self, watcher: Weak<dyn PepWatcher>) {
        (self.watchers.write().unwrap_or_else(|e| e.into_inner())).push(watcher);
    }

    /// Runs a `pubsub` or `pubsub#owner` request on `owner`'s nodes as if the account's own
    /// client had sent it, for a service that keeps the account's data in step: the same
    /// rules and notifications, but the watchers are not told (the caller made the change).
    pub async fn request_as_owner(
        &self,
        cx: &mut Context<'_>,
        owner: &BareJid,
        kind: IqKind,
        payload: Element,
    ) -> IqResponse {
        let req = IqRequest {
            from: Jid::from(owner.clone()),
            to: Jid::from(owner.clone()),
            kind,
            payload,
        };
        self.run(cx, owner, req).await.map(|(reply, _)| reply)
    }

    /// Runs `req` and sends what it causes; returns the answer and the nodes it changed.
    async fn run(
        &self,
        cx: &mut Context<'_>,
        owner: &BareJid,
        req: IqRequest,
    ) -> Result<(Option<Element>, Vec<String>), StanzaError> {
        let scope = pep_scope(owner, req.from.bare() == *owner);
        let answer = self.engine.handle(cx, &scope, req).await?;
        // Told or not: a node may keep quiet about retractions, purges and its deletion.
        let changed: Vec<String> = answer.changed.into_iter().collect();
        self.notify(cx, owner, answer.events).await;
        for (to, event) in answer.direct {
            let mut msg = notification_of(owner.as_str(), cx.next_id(), event);
            xmppd_core::stanza::set_attr(&mut msg, "to", to.as_str());
            cx.send(msg);
        }
        Ok((answer.reply, changed))
    }

    fn interests(&self) -> std::sync::MutexGuard<'_, HashMap<FullJid, Interest>> {
        self.interest.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remote(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<BareJid, HashMap<FullJid, HashSet<BareJid>>>> {
        self.remote.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The available resources of the remote account `bare`.
    fn remote_resources(&self, bare: &BareJid) -> Vec<FullJid> {
        (self.remote().get(bare)).map_or_else(Vec::new, |r| r.keys().cloned().collect())
    }

    /// A remote contact's presence to `account`: an available one with capabilities says
    /// what the resource wants, as a local session's does; an unavailable one ends that.
    async fn remote_presence(
        &self,
        cx: &mut Context<'_>,
        jid: &FullJid,
        account: &BareJid,
        pres: &Element,
    ) {
        match pres.attr("type") {
            None => {
                (self.remote().entry(jid.bare()).or_default())
                    .entry(jid.clone())
                    .or_default()
                    .insert(account.clone());
                self.caps_from_presence(cx, jid, account, pres).await;
            }
            Some("unavailable") => {
                let mut remote = self.remote();
                let Some(resources) = remote.get_mut(&jid.bare()) else {
                    return;
                };
                if let Some(accounts) = resources.get_mut(jid) {
                    accounts.remove(account);
                    if accounts.is_empty() {
                        resources.remove(jid);
                        self.interests().remove(jid);
                    }
                }
                if resources.is_empty() {
                    remote.remove(&jid.bare());
                }
            }
            _ => {}
        }
    }

    /// Whether `jid` is available: a local session, or a remote resource whose presence
    /// reached an account here.
    fn available(&self, cx: &Context<'_>, jid: &FullJid) -> bool {
        let bare = jid.bare();
        if !cx.is_local_host(bare.domain().as_str()) {
            return self
                .remote()
                .get(&bare)
                .is_some_and(|r| r.contains_key(jid));
        }
        (cx.sessions().resources(&bare).iter()).any(|r| r.jid == *jid && r.available)
    }

    fn wants(&self, jid: &FullJid, node: &str) -> bool {
        self.interests().get(jid).is_some_and(|i| i.contains(node))
    }

    /// Sets what `jid` wants, and sends it the last items of the nodes it newly wants.
    async fn set_interest(&self, cx: &mut Context<'_>, jid: &FullJid, interest: Interest) {
        let old = self.interests().insert(jid.clone(), interest.clone());
        let new: HashSet<String> = match old {
            Some(old) => interest.difference(&old).cloned().collect(),
            None => (*interest).clone(),
        };
        if !new.is_empty() {
            self.send_last_items(cx, jid, &new).await;
        }
    }

    /// XEP-0163 §4.3.4: the last item of each node in `nodes` of every account whose events
    /// `jid` may receive: its own, and those of the contacts it is subscribed to.
    async fn send_last_items(&self, cx: &mut Context<'_>, jid: &FullJid, nodes: &HashSet<String>) {
        let me = jid.bare();
        if !cx.is_local_host(me.domain().as_str()) {
            // A remote resource: the items of the accounts here it is available to that
            // share their presence with it; its own server sends the rest.
            let present_to: Vec<BareJid> = (self.remote().get(&me))
                .and_then(|r| r.get(jid))
                .map_or_else(Vec::new, |a| a.iter().cloned().collect());
            let mut accounts = Vec::new();
            for account in present_to {
                let shares = (xmppd_im::effective_roster(cx, &account).await)
                    .into_iter()
                    .any(|item| {
                        item.jid == me.as_str()
                            && matches!(item.subscription, Subscription::From | Subscription::Both)
                    });
                if shares {
                    accounts.push(account);
                }
            }
            self.last_items_of(cx, &accounts, jid, nodes).await;
            return;
        }
        let mut accounts = vec![me.clone()];
        for item in xmppd_im::effective_roster(cx, &me).await {
            if matches!(item.subscription, Subscription::To | Subscription::Both) {
                if let Ok(contact) = BareJid::new(&item.jid) {
                    if cx.is_local_host(contact.domain().as_str()) {
                        accounts.push(contact);
                    }
                }
            }
        }
        self.last_items_of(cx, &accounts, jid, nodes).await;
    }

    /// The last item of each node of `accounts` among `nodes` that `jid` may read and that
    /// sends its last item on presence, read for all accounts at once. Each account shares
    /// its presence with `jid` (its own, or a contact's that `jid` is subscribed to), so the
    /// presence access model holds without asking again.
    async fn last_items_of(
        &self,
        cx: &mut Context<'_>,
        accounts: &[BareJid],
        jid: &FullJid,
        nodes: &HashSet<String>,
    ) {
        let me = jid.bare();
        let owners = accounts.iter().map(|a| a.to_string()).collect();
        let wanted = nodes.iter().cloned().collect();
        let found = match (self.engine.nodes)
            .last_items(owners, wanted, me.as_str())
            .await
        {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(error = %e, "pep: reading the last items failed");
                return;
            }
        };
        for last in found {
            let affiliation = if last.owner == me.as_str() {
                Some(Affiliation::Owner)
            } else {
                last.affiliation
            };
            let allowed = match (affiliation, last.node.config.access) {
                (Some(_), _) | (None, AccessModel::Roster) => {
                    Engine::access_with(cx, &last.node, &me, affiliation)
                        .await
                        .is_ok()
                }
                (None, AccessModel::Open | AccessModel::Presence) => true,
                (None, AccessModel::Whitelist) => false,
            };
            if !allowed {
                continue;
            }
            let ev = items_event(&last.node, &last.item);
            let mut msg = notification(&last.owner, cx.next_id(), ev.payload);
            xmppd_core::stanza::set_attr(&mut msg, "to", jid.as_str());
            cx.send(msg);
        }
    }

    /// The sessions that get `event` of `owner`'s node: XEP-0163 §4.3.
    async fn recipients(&self, cx: &Context<'_>, owner: &BareJid, ev: &Event) -> Vec<FullJid> {
        let node = &ev.node;
        let mut accounts: Vec<BareJid> = vec![owner.clone()];
        // A whitelist node reaches only the contacts affiliated with it (XEP-0060 §4.5).
        let whitelist = node.config.access == AccessModel::Whitelist;
        if !whitelist || !ev.affiliations.is_empty() {
            for item in xmppd_im::effective_roster(cx, owner).await {
                let shares = matches!(item.subscription, Subscription::From | Subscription::Both);
                let allowed = match (ev.affiliation(&item.jid), node.config.access) {
                    (Some(a), _) => a.reads(),
                    (None, AccessModel::Whitelist) => false,
                    (None, AccessModel::Roster) => {
                        (item.groups.iter()).any(|g| node.config.roster_groups.contains(g))
                    }
                    (None, AccessModel::Open | AccessModel::Presence) => true,
                };
                if shares && allowed {
                    if let Ok(contact) = BareJid::new(&item.jid) {
                        accounts.push(contact);
                    }
                }
            }
        }
        let mut out: Vec<FullJid> = Vec::new();
        for account in &accounts {
            if !cx.is_local_host(account.domain().as_str()) {
                // A remote contact: the resources its presence announced here.
                let remote = self.remote_resources(account).into_iter();
                out.extend(remote.filter(|jid| self.wants(jid, &node.name)));
                continue;
            }
            for r in cx.sessions().resources(account) {
                if r.available && self.wants(&r.jid, &node.name) {
                    out.push(r.jid);
                }
            }
        }
        // Explicit subscriptions (XEP-0060 §6.1), checked against the access model when made.
        for s in &ev.subscribers {
            let Ok(jid) = Jid::new(s) else { continue };
            if ev.affiliation(jid.bare().as_str()) == Some(Affiliation::Outcast) {
                continue;
            }
            match jid.try_into_full() {
                Ok(full) => out.push(full),
                Err(b) => {
                    let resources = cx.sessions().resources(&b);
                    out.extend(resources.into_iter().filter(|r| r.available).map(|r| r.jid));
                }
            }
        }
        out.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        out.dedup();
        out
    }

    /// Sends each event to its recipients, one shared element for all.
    async fn notify(&self, cx: &mut Context<'_>, owner: &BareJid, events: Vec<Event>) {
        for ev in events {
            let to = self.recipients(cx, owner, &ev).await;
            if to.is_empty() {
                continue;
            }
            let msg = Arc::new(notification(owner.as_str(), cx.next_id(), ev.payload));
            for jid in &to {
                cx.send_shared(jid, msg.clone());
            }
        }
    }

    /// A client's available presence: what its capabilities say it wants, from the cache if
    /// the string was verified, else asked of the client itself (XEP-0115 §6.3) by `asker`,
    /// an account here (the client's own, or the one a remote client's presence reached).
    async fn caps_from_presence(
        &self,
        cx: &mut Context<'_>,
        jid: &FullJid,
        asker: &BareJid,
        pres: &Element,
    ) {
        let Some(c) = pres.get_child("c", ns::CAPS) else {
            self.set_interest(cx, jid, Arc::default()).await;
            return;
        };
        let Ok(c) = Caps::try_from(c.clone()) else {
            return;
        };
        use base64::Engine as _;
        let ver = base64::engine::general_purpose::STANDARD.encode(&c.ver);
        let key = caps::key(&c.hash, &ver);
        if let Some(interest) = self.caps.get(&key) {
            self.set_interest(cx, jid, interest).await;
            return;
        }
        if self.caps.asking(jid, &ver) {
            return;
        }
        let id = format!("{CAPS_ID}{}", cx.next_id());
        let query = DiscoInfoQuery {
            node: Some(format!("{}#{ver}", c.node)),
        };
        let attrs = [
            ("type", "get"),
            ("id", id.as_str()),
            ("from", asker.as_str()),
            ("to", jid.as_str()),
        ];
        let mut iq = xmppd_core::stanza::elem("iq", NS_CLIENT, &attrs);
        iq.append_child(Element::from(query));
        self.caps.expect(id, jid.clone(), c.hash, ver);
        cx.send(iq);
    }
}

fn pep_scope(owner: &BareJid, may_create: bool) -> Scope {
    Scope {
        owner: owner.to_string(),
        pep: true,
        may_create,
    }
}

#[async_trait]
impl Module for Pep {
    fn name(&self) -> &'static str {
        "pep"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            presence_out: true,
            presence_to_account: true,
            iq_in: true,
            ..Hooks::NONE
        }
    }

    /// XEP-0163 §4.3.4: a contact whose subscription to the account was just approved newly
    /// shows interest: its resources get the account's last items they ask for. The
    /// approver's roster already says so (its own presence hooks stored the approval before
    /// the `subscribed` was routed).
    async fn on_presence_to_account(
        &self,
        cx: &mut Context<'_>,
        pres: &mut Element,
        to: &Jid,
    ) -> HookAction {
        let Some(from) = pres.attr("from").and_then(|f| Jid::new(f).ok()) else {
            return HookAction::Continue;
        };
        if !cx.is_local_host(from.domain().as_str()) {
            if let Ok(full) = from.try_into_full() {
                self.remote_presence(cx, &full, &to.bare(), pres).await;
            }
            return HookAction::Continue;
        }
        if pres.attr("type") != Some("subscribed") {
            return HookAction::Continue;
        }
        let account = from.bare();
        if !cx.is_local_host(account.domain().as_str()) {
            return HookAction::Continue;
        }
        let wanting: Vec<(FullJid, Interest)> = {
            let interests = self.interests();
            (cx.sessions().resources(&to.bare()).into_iter())
                .filter(|r| r.available)
                .filter_map(|r| interests.get(&r.jid).map(|i| (r.jid, i.clone())))
                .collect()
        };
        for (jid, interest) in wanting {
            self.last_items_of(cx, std::slice::from_ref(&account), &jid, &interest)
                .await;
        }
        HookAction::Continue
    }

    fn account_features(&self) -> Vec<String> {
        crate::engine::features(PEP_FEATURES)
    }

    fn account_identities(&self) -> Vec<(&'static str, &'static str)> {
        vec![("pubsub", "pep")]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![ns::PUBSUB, ns::PUBSUB_OWNER]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let owner = req.to.bare();
        if !cx
            .store()
            .user_exists(&user_ref(&owner))
            .await
            .unwrap_or(false)
        {
            return Err(StanzaError::new(Condition::ServiceUnavailable));
        }
        let (reply, changed) = self.run(cx, &owner, req).await?;
        if !changed.is_empty() {
            let watchers: Vec<Arc<dyn PepWatcher>> = (self.watchers.read())
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for node in &changed {
                for w in &watchers {
                    w.on_node_changed(cx, &owner, node).await;
                }
            }
        }
        Ok(reply)
    }

    async fn on_presence_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        _state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        // Broadcast presence only: directed presence says nothing of the client's interest.
        if pres.attr("to").is_some() {
            return HookAction::Continue;
        }
        match pres.attr("type") {
            None => {
                let own = session.jid.bare();
                self.caps_from_presence(cx, &session.jid, &own, pres).await
            }
            Some("unavailable") => {
                self.interests().remove(&session.jid);
            }
            _ => {}
        }
        HookAction::Continue
    }

    async fn on_iq_in(&self, cx: &mut Context<'_>, iq: &mut Element) -> HookAction {
        let kind = iq.attr("type");
        let (Some("result" | "error"), Some(id)) = (kind, iq.attr("id")) else {
            return HookAction::Continue;
        };
        if !id.starts_with(CAPS_ID) {
            return HookAction::Continue;
        }
        let from = iq.attr("from").unwrap_or_default();
        let Some((jid, algo, ver)) = self.caps.answered(id, from) else {
            return HookAction::Continue;
        };
        let info = (kind == Some("result"))
            .then(|| iq.get_child("query", ns::DISCO_INFO))
            .flatten()
            .and_then(|q| DiscoInfoResult::try_from(q.clone()).ok());
        if let Some(info) = info {
            let interest = caps::notify_nodes(&info.features);
            if caps::verify(&info, algo.clone(), &ver) {
                self.caps.insert(caps::key(&algo, &ver), interest.clone());
            } else {
                // The client's own answer still says what it wants; only the cache, which
                // others' presence would be read against, must not believe the string.
                tracing::debug!(%jid, "pep: capabilities do not match their hash; not cached");
            }
            // A session gone unavailable meanwhile has no interest to set.
            if self.available(cx, &jid) {
                self.set_interest(cx, &jid, interest).await;
            }
        }
        HookAction::Stop(None)
    }

    async fn on_session_closed(&self, _cx: &mut Context<'_>, jid: &FullJid) {
        self.interests().remove(jid);
    }
}
