//! [`MamModule`]: user archives on the message path and the `urn:xmpp:mam:2` IQs on each
//! account's bare JID.
//!
//! - A message a local session sends is archived in the sender's archive (`on_message_out`);
//!   a message to a local account in the recipient's (`on_message_in`), before any session or
//!   offline storage takes it, so both sides of a local conversation are archived, a message
//!   to an offline user once, and the copy delivered (or stored offline) carries the
//!   recipient's `<stanza-id by=OWNER id=ARCHIVE-ID/>` (XEP-0359). The archive rows are
//!   committed before the message is passed on. Between two local accounts, both rows are
//!   written together as the message reaches the recipient: one job of the store's
//!   group-commit writer, so the message waits for one commit, shared with whatever else is
//!   being written, and not for two.
//! - A `<stanza-id/>` a sender wrote claiming an archive of this server is removed (XEP-0359
//!   §4: only the archive may set it). `<origin-id/>` is kept.
//! - What is archived: [`crate::policy`]; then the owner's preferences (XEP-0441), with the
//!   configured default for those who set none.
//! - A session that queries the archive is marked as syncing through it: a message the
//!   archive holds for it that is still queued when the session ends (its stream management
//!   resumption timed out) is not put in offline storage as well.
//! - A retraction (XEP-0424) replaces the message it names with a tombstone in the sender's
//!   archive and in a local recipient's, when the sender sent it in that conversation
//!   ([`crate::retract`]), before the retraction itself is archived and passed on.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dashmap::DashMap;
use jid::{BareJid, Jid};
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::module::{HookAction, Hooks, IqKind, IqRequest, IqResponse, Module};
use xmppd_core::stanza::{self, Condition, StanzaError};
use xmppd_core::{user_ref, Addressing, ClientSession, Context};

use crate::answer::{self, storage_error};
use crate::policy::{self, Verdict};
use crate::query::{self, PageLimits, NS_FULLTEXT, NS_MAM, NS_MAM_EXTENDED, NS_SID};
use crate::retract::{self, NS_RETRACT, NS_RETRACT_TOMBSTONE};
use crate::store::{encode_id, ArchiveStore, DefaultPolicy, Direction, NewMessage, Prefs};

/// Settings of the user archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MamSettings {
    /// Preferences of an owner who set none.
    pub default_policy: DefaultPolicy,
    /// Archive chat markers (XEP-0333) without a body too.
    pub markers: bool,
    pub limits: PageLimits,
    /// Owners whose preferences are kept in memory (the least recently used beyond that are
    /// read from storage again when needed).
    pub prefs_cache: usize,
    /// A message a local session sends carries its sender's archive id too
    /// (`<stanza-id by=SENDER/>`) once archived, for the carbons module to move onto the
    /// `<sent/>` copy (XEP-0280 §8, XEP-0359): only with that module after this one, which
    /// takes it off the message itself.
    pub sender_ids: bool,
}

impl Default for MamSettings {
    fn default() -> Self {
        MamSettings {
            default_policy: DefaultPolicy::Always,
            markers: false,
            limits: PageLimits::default(),
            prefs_cache: PrefsCache::CAPACITY,
            sender_ids: false,
        }
    }
}

/// The message archive module.
pub struct MamModule {
    store: Arc<dyn ArchiveStore>,
    settings: MamSettings,
    /// Owners' preferences, read once: consulted for every archived message.
    prefs: PrefsCache,
    /// Senders' rows that wait for the recipient's: (sender's full JID, `to`) of a message that
    /// `on_message_out` found archivable for its sender and that the core routes to a local
    /// account next, which runs `on_message_in` on the same task. A count, since two sessions
    /// of one full JID (one replacing the other) may each have such a message under way.
    pending: DashMap<(String, String), u32>,
}

/// Owners' preferences as last read or set, for at most a fixed number of owners: every
/// account that ever sent or received a message would otherwise stay here for the server's
/// lifetime. Two generations approximate least-recently-used: entries are added to the young
/// one, which becomes the old one (the previous old one going) once it holds half the
/// capacity; an entry read from the old one moves back to the young one.
struct PrefsCache {
    half: usize,
    gens: Mutex<Generations>,
}

#[derive(Default)]
struct Generations {
    young: HashMap<String, Prefs>,
    old: HashMap<String, Prefs>,
}

impl PrefsCache {
    /// The default of [`MamSettings::prefs_cache`].
    const CAPACITY: usize = 16_384;

    fn new(capacity: usize) -> PrefsCache {
        PrefsCache {
            half: (capacity / 2).max(1),
            gens: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Generations> {
        // What it holds is a cache, whole after any panic: poisoning changes nothing.
        self.gens.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, owner: &str) -> Option<Prefs> {
        let mut g = self.lock();
        if let Some(p) = g.young.get(owner) {
            return Some(p.clone());
        }
        let p = g.old.remove(owner)?;
        self.put(&mut g, owner.to_owned(), p.clone());
        Some(p)
    }

    fn insert(&self, owner: String, prefs: Prefs) {
        let mut g = self.lock();
        g.old.remove(&owner);
        self.put(&mut g, owner, prefs);
    }

    fn put(&self, g: &mut Generations, owner: String, prefs: Prefs) {
        g.young.insert(owner, prefs);
        if g.young.len() >= self.half {
            g.old = std::mem::take(&mut g.young);
        }
    }

    fn remove(&self, owner: &str) {
        let mut g = self.lock();
        g.young.remove(owner);
        g.old.remove(owner);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        let g = self.lock();
        g.young.len() + g.old.len()
    }
}

pub(crate) fn serialize(el: &Element) -> String {
    let mut xml = Vec::new();
    xmppd_stream::serialize(el, "", &mut xml);
    String::from_utf8_lossy(&xml).into_owned()
}

/// Removes the `<stanza-id/>`s of `msg` whose `by` `claimed` says belongs to this server.
fn strip_stanza_ids(msg: &mut Element, claimed: impl Fn(&Jid) -> bool) {
    stanza::remove_children(msg, |c| {
        c.is("stanza-id", NS_SID)
            && c.attr("by")
                .and_then(|b| Jid::new(b).ok())
                .is_some_and(|by| claimed(&by))
    });
}

/// Whether `domain` is a served host or a subdomain of one (a component's: rooms).
fn ours(cx: &Context<'_>, domain: &str) -> bool {
    cx.hosts().iter().any(|h| {
        domain.eq_ignore_ascii_case(h)
            || (domain.len() > h.len()
                && domain.as_bytes()[domain.len() - h.len() - 1] == b'.'
                && domain[domain.len() - h.len()..].eq_ignore_ascii_case(h))
    })
}

impl MamModule {
    pub fn new(store: Arc<dyn ArchiveStore>, settings: MamSettings) -> MamModule {
        MamModule {
            store,
            prefs: PrefsCache::new(settings.prefs_cache),
            settings,
            pending: DashMap::new(),
        }
    }

    async fn prefs_of(&self, owner: &str) -> Result<Prefs, StanzaError> {
        if let Some(p) = self.prefs.get(owner) {
            return Ok(p);
        }
        let p = (self.store.prefs(owner).await.map_err(storage_error)?)
            .unwrap_or_else(|| Prefs::with_default(self.settings.default_policy));
        self.prefs.insert(owner.to_owned(), p.clone());
        Ok(p)
    }

    /// Whether `owner`'s preferences let a message with `with` in.
    async fn wanted(&self, cx: &Context<'_>, owner: &BareJid, with: &BareJid) -> bool {
        let prefs = match self.prefs_of(owner.as_str()).await {
            Ok(p) => p,
            Err(_) => return true,
        };
        match policy::verdict(&prefs, with.as_str()) {
            Verdict::Archive => true,
            Verdict::Skip => false,
            Verdict::IfInRoster => self.in_roster(cx, owner, with).await,
        }
    }

    /// XEP-0313 §6 `roster`: whether `with` is in `owner`'s roster as the owner's clients see
    /// it: the stored items and those modules contribute (shared roster groups).
    async fn in_roster(&self, cx: &Context<'_>, owner: &BareJid, with: &BareJid) -> bool {
        let stored = cx
            .store()
            .roster_item(&user_ref(owner), with.as_str())
            .await;
        if matches!(stored, Ok(Some(_))) {
            return true;
        }
        for m in cx.roster_modules() {
            if m.has_roster_item(cx, owner, with).await {
                return true;
            }
        }
        false
    }

    /// Stores `msg` as the rows `copies` name (owner, the other party, direction), in one
    /// write; their archive ids, none when it failed. The stanza is serialised once for all.
    async fn archive(
        &self,
        copies: &[(&BareJid, &Jid, Direction)],
        msg: &Element,
    ) -> Option<Vec<i64>> {
        let stanza = serialize(msg);
        let text = policy::body(msg);
        let rows = copies
            .iter()
            .map(|&(owner, with, direction)| NewMessage {
                owner: owner.to_string(),
                with_bare: with.bare().to_string(),
                with_resource: with.resource().map(|r| r.to_string()).unwrap_or_default(),
                direction,
                stanza: stanza.clone(),
                text: text.clone(),
            })
            .collect();
        match self.store.append_all(rows).await {
            Ok(got) => Some(got.into_iter().map(|(id, _)| id).collect()),
            Err(e) => {
                // The message still goes on: losing it would be worse than not archiving it.
                tracing::error!(error = %e, from = ?msg.attr("from"), to = ?msg.attr("to"),
                    "could not archive a message");
                None
            }
        }
    }

    /// Applies the retraction `msg` may carry to `owner`'s archive: the newest message it names
    /// among those exchanged with `with` in `direction`, which `sender` sent, becomes a
    /// tombstone (XEP-0424 §4). Anything else is left alone.
    async fn retract(
        &self,
        owner: &BareJid,
        with: &BareJid,
        direction: Direction,
        sender: &BareJid,
        msg: &Element,
    ) {
        let Some(r) = retract::parse(msg) else {
            return;
        };
        let needle = retract::needle(&r.target).to_owned();
        let names = {
            let r = r.clone();
            Box::new(move |stored: &str| retract::names(&r, stored))
        };
        let found = self
            .store
            .find_latest(owner.as_str(), with.as_str(), direction, &needle, names)
            .await;
        let outcome = match found {
            Ok(Some((id, stored))) => {
                match retract::tombstone(&stored, &r, sender.as_str(), stanza::now_ms()) {
                    Some(t) => {
                        self.store
                            .replace_stanza(owner.as_str(), id, serialize(&t))
                            .await
                    }
                    None => Ok(false),
                }
            }
            Ok(None) => Ok(false),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            // The retraction still goes on, as any message does when archiving fails.
            tracing::error!(error = %e, owner = %owner, "could not apply a retraction to the archive");
        }
    }

    /// XEP-0424: a copy of the retracted message still in `owner`'s offline storage becomes the
    /// tombstone the archive holds, so what the recipient's client gets from there agrees with
    /// its archive (and a retraction without a body, which offline storage does not keep, is
    /// not lost). The newest message `sender` sent that `msg` names; its delay stamp and the
    /// recipient's archive id stay.
    async fn retract_offline(
        &self,
        cx: &Context<'_>,
        owner: &BareJid,
        sender: &BareJid,
        msg: &Element,
    ) {
        let Some(r) = retract::parse(msg) else {
            return;
        };
        let user = user_ref(owner);
        let stored = match cx.store().offline_messages(&user).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, owner = %owner, "could not read offline messages to retract one");
                return;
            }
        };
        let needle = retract::needle(&r.target);
        let now = stanza::now_ms();
        let found = (stored.iter().rev())
            .filter(|m| m.xml.contains(needle))
            .find_map(|m| {
                let el: Element = m.xml.parse().ok()?;
                let from = Jid::new(el.attr("from")?).ok()?;
                if from.bare() != *sender || !retract::names_message(&r, &el) {
                    return None;
                }
                let mut tomb = retract::tombstone(&m.xml, &r, sender.as_str(), now)?;
                for c in el.children() {
                    if c.is("delay", stanza::NS_DELAY)
                        || (c.is("stanza-id", NS_SID) && c.attr("by") == Some(owner.as_str()))
                    {
                        tomb.append_child(c.clone());
                    }
                }
                Some((m.id, tomb))
            });
        if let Some((id, tomb)) = found {
            if let Err(e) = cx
                .store()
                .replace_offline(&user, id, &serialize(&tomb))
                .await
            {
                tracing::error!(error = %e, owner = %owner, "could not retract an offline message");
            }
        }
    }

    /// Takes one sender's row left waiting by `on_message_out` for this (from, to).
    fn take_pending(&self, from: &str, to: &str) -> bool {
        let key = (from.to_owned(), to.to_owned());
        match self.pending.entry(key) {
            dashmap::mapref::entry::Entry::Occupied(mut e) => {
                if *e.get() > 1 {
                    *e.get_mut() -= 1;
                } else {
                    e.remove();
                }
                true
            }
            dashmap::mapref::entry::Entry::Vacant(_) => false,
        }
    }

    /// With [`MamSettings::sender_ids`]: `msg`, archived as `id` in its sender's archive,
    /// carries that id for the sent copy.
    fn sender_id(&self, msg: &mut Element, sender: &BareJid, id: i64) {
        if self.settings.sender_ids {
            let id = encode_id(id);
            let sid = stanza::elem("stanza-id", NS_SID, &[("by", sender.as_str()), ("id", &id)]);
            msg.append_child(sid);
        }
    }

    async fn account_exists(&self, cx: &Context<'_>, user: &BareJid) -> bool {
        !cx.resources(user).is_empty()
            || matches!(cx.store().user_exists(&user_ref(user)).await, Ok(true))
    }
}

#[async_trait]
impl Module for MamModule {
    fn name(&self) -> &'static str {
        "mam"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            message_out: true,
            message_in: true,
            iq_out: true,
            ..Hooks::NONE
        }
    }

    fn account_features(&self) -> Vec<String> {
        vec![
            NS_MAM.into(),
            NS_MAM_EXTENDED.into(),
            NS_FULLTEXT.into(),
            NS_RETRACT.into(),
            NS_RETRACT_TOMBSTONE.into(),
        ]
    }

    fn account_iq_namespaces(&self) -> Vec<&'static str> {
        vec![NS_MAM]
    }

    async fn handle_iq(&self, cx: &mut Context<'_>, req: IqRequest) -> IqResponse {
        let owner = req.to.bare();
        // XEP-0313 §3.3 / §4: an account's archive is its owner's alone.
        if req.from.bare() != owner {
            return Err(StanzaError::new(Condition::Forbidden));
        }
        match (req.payload.name(), req.kind) {
            ("prefs", IqKind::Get) => Ok(Some(query::prefs_element(
                &self.prefs_of(owner.as_str()).await?,
            ))),
            ("prefs", IqKind::Set) => {
                let prefs = query::parse_prefs(&req.payload)?;
                (self.store.set_prefs(owner.as_str(), &prefs).await).map_err(storage_error)?;
                self.prefs.insert(owner.to_string(), prefs.clone());
                Ok(Some(query::prefs_element(&prefs)))
            }
            _ => {
                let to = req.from.to_string();
                let limits = self.settings.limits;
                let kind = req.kind;
                let a = answer::answer(
                    &*self.store,
                    limits,
                    owner.as_str(),
                    &to,
                    &req.payload,
                    kind,
                    |m| m,
                )
                .await?;
                // XEP-0313 §4.2: every result before the IQ answer; both go through the
                // outbox in order, the answer queued by the core once this returns.
                for m in a.results {
                    match req.from.try_as_full() {
                        Ok(full) => cx.deliver(full, m),
                        Err(_) => cx.send(m),
                    }
                }
                Ok(a.payload)
            }
        }
    }

    async fn on_message_out(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        strip_stanza_ids(msg, |by| ours(cx, by.domain().as_str()));
        let Some(Addressing { from, to }) = cx.addressing(msg).map(Cow::into_owned) else {
            // No `to`: to the sender's own account, archived once, as it arrives there.
            return HookAction::Continue;
        };
        let owner = from.bare();
        if to.bare() == owner {
            return HookAction::Continue;
        }
        // The tombstone first: the retraction, archived next, may not name itself.
        self.retract(&owner, &to.bare(), Direction::Outgoing, &owner, msg)
            .await;
        if !policy::archivable(msg, self.settings.markers)
            || !self.wanted(cx, &owner, &to.bare()).await
        {
            return HookAction::Continue;
        }
        if to.node().is_some() && cx.is_local_host(to.domain().as_str()) {
            // The core routes it to that account next (`on_message_in`, on this task), which
            // writes this row with the recipient's in one job.
            let key = (
                msg.attr("from").unwrap_or_default().to_owned(),
                msg.attr("to").unwrap_or_default().to_owned(),
            );
            *self.pending.entry(key).or_insert(0) += 1;
            return HookAction::Continue;
        }
        let ids = (self.archive(&[(&owner, &to, Direction::Outgoing)], msg)).await;
        if let Some(&id) = ids.as_deref().and_then(<[i64]>::first) {
            self.sender_id(msg, &owner, id);
        }
        HookAction::Continue
    }

    async fn on_message_in(&self, cx: &mut Context<'_>, msg: &mut Element) -> HookAction {
        let Some(Addressing { from: with, to }) = cx.addressing(msg).map(Cow::into_owned) else {
            return HookAction::Continue;
        };
        let owner = to.bare();
        strip_stanza_ids(msg, |by| by.bare() == owner);
        let (Some(from_attr), Some(to_attr)) = (msg.attr("from"), msg.attr("to")) else {
            return HookAction::Continue;
        };
        let senders = self.take_pending(from_attr, to_attr);
        let sender = with.bare();
        self.retract(&owner, &sender, Direction::Incoming, &sender, msg)
            .await;
        self.retract_offline(cx, &owner, &sender, msg).await;
        let recipients = policy::archivable(msg, self.settings.markers)
            && self.account_exists(cx, &owner).await
            && self.wanted(cx, &owner, &sender).await;
        let mut copies = Vec::with_capacity(2);
        if senders {
            copies.push((&sender, &to, Direction::Outgoing));
        }
        if recipients {
            copies.push((&owner, &with, Direction::Incoming));
        }
        if copies.is_empty() {
            return HookAction::Continue;
        }
        let ids = self.archive(&copies, msg).await.unwrap_or_default();
        let mut ids = ids.into_iter();
        if senders {
            if let Some(id) = ids.next() {
                self.sender_id(msg, &sender, id);
            }
        }
        if let Some(id) = ids.next().filter(|_| recipients) {
            let id = encode_id(id);
            let sid = stanza::elem("stanza-id", NS_SID, &[("by", owner.as_str()), ("id", &id)]);
            msg.append_child(sid);
        }
        HookAction::Continue
    }

    /// A session that queries its archive syncs through it (XEP-0313 §4): what the archive
    /// holds for it is not also kept in offline storage when it ends
    /// ([`ClientSession::syncs_archive`]).
    async fn on_iq_out(
        &self,
        _cx: &mut Context<'_>,
        session: &ClientSession,
        iq: &mut Element,
    ) -> HookAction {
        // Its own archive, not a room's.
        let own = iq.attr("to") == Some(session.jid.bare().as_str());
        if own && iq.attr("type") == Some("set") && iq.children().any(|c| c.is("query", NS_MAM)) {
            session.mark_archive_sync();
        }
        HookAction::Continue
    }

    async fn on_account_removed(&self, _cx: &mut Context<'_>, user: &BareJid) {
        self.prefs.remove(user.as_str());
        if let Err(e) = self.store.remove_owner(user.as_str()).await {
            tracing::error!(error = %e, user = %user, "could not delete a removed account's archive");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefs(d: DefaultPolicy) -> Prefs {
        Prefs::with_default(d)
    }

    #[tokio::test]
    async fn the_module_keeps_the_preferences_of_a_bounded_number_of_owners() {
        let store = Arc::new(xmppd_storage::SqliteStore::open_in_memory().unwrap());
        let archive = Arc::new(crate::SqliteArchive::open(store).await.unwrap());
        let settings = MamSettings {
            prefs_cache: 8,
            ..MamSettings::default()
        };
        let module = MamModule::new(archive.clone(), settings);
        let mine = Prefs::with_default(DefaultPolicy::Never);
        archive.set_prefs("busy@x", &mine).await.unwrap();
        for i in 0..200 {
            module.prefs_of(&format!("u{i}@x")).await.unwrap();
            assert!(
                module.prefs.len() <= 8,
                "{} owners kept",
                module.prefs.len()
            );
            assert_eq!(module.prefs_of("busy@x").await.unwrap(), mine);
        }
    }

    #[test]
    fn the_preferences_cache_is_bounded_and_keeps_what_is_used() {
        let cache = PrefsCache::new(8);
        cache.insert("busy@x".into(), prefs(DefaultPolicy::Never));
        for i in 0..1_000 {
            cache.insert(format!("u{i}@x"), prefs(DefaultPolicy::Always));
            assert!(cache.len() <= 8, "{} owners kept", cache.len());
            // An owner whose preferences are consulted all the time stays.
            assert_eq!(
                cache.get("busy@x"),
                Some(prefs(DefaultPolicy::Never)),
                "{i}"
            );
        }
        assert_eq!(cache.get("u0@x"), None, "the least recently used went");
        assert_eq!(cache.get("u999@x"), Some(prefs(DefaultPolicy::Always)));
        // A change replaces the old entry wherever it is.
        cache.insert("busy@x".into(), prefs(DefaultPolicy::Roster));
        assert_eq!(cache.get("busy@x"), Some(prefs(DefaultPolicy::Roster)));
        cache.remove("busy@x");
        assert_eq!(cache.get("busy@x"), None);
    }
}
