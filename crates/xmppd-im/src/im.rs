//! RFC 6121 instant messaging rules: roster management (§2), subscriptions with
//! pre-approval (§3), presence broadcast, probes and directed presence (§4), and [`Im`], the
//! module that applies them through the core's hooks.

use std::sync::Arc;

use async_trait::async_trait;
use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::module::{HookAction, Hooks, IqKind, Module};
use xmppd_core::router::SessionId;
use xmppd_core::stanza::{self, iq_result, Condition, StanzaError, NS_CLIENT, NS_ROSTER};
use xmppd_core::{user_ref, ClientSession, Context, PresenceState};
use xmppd_storage::{AccountRemoval, RosterItem, Subscription, UserRef};

/// Entities one session may have sent directed presence to and still be tracking (RFC 6121
/// §4.6); beyond this, further targets are not remembered for the unavailable at logout.
const MAX_DIRECTED: usize = 1000;
/// Groups one roster item may be in.
const MAX_GROUPS: usize = 64;
/// Inbound subscription requests kept per account until answered; more are dropped.
const MAX_PENDING_SUBSCRIPTIONS: usize = 500;
/// Longest `<status/>` kept in a stored subscription request.
const MAX_REQUEST_STATUS: usize = 1024;
const NS_NICK: &str = "http://jabber.org/protocol/nick";

/// What is kept of an inbound subscription request: the addresses, a short `<status/>` and
/// the requester's nickname (XEP-0172). The rest of what the sender wrote is not stored in the
/// recipient's account nor delivered again at each login.
fn subscription_request(pres: &Element) -> Element {
    let mut kept = Element::bare("presence", NS_CLIENT);
    for a in ["from", "to", "type", "id"] {
        if let Some(v) = pres.attr(a) {
            stanza::set_attr(&mut kept, a, v);
        }
    }
    for child in pres.children() {
        let short = child.text().len() <= MAX_REQUEST_STATUS && child.children().next().is_none();
        if short && (child.is("status", NS_CLIENT) || child.is("nick", NS_NICK)) {
            kept.append_child(child.clone());
        }
    }
    kept
}

fn presence(kind: Option<&str>, from: &str, to: &str) -> Element {
    let mut p = Element::bare("presence", NS_CLIENT);
    if let Some(k) = kind {
        stanza::set_attr(&mut p, "type", k);
    }
    stanza::set_attr(&mut p, "from", from);
    stanza::set_attr(&mut p, "to", to);
    p
}

fn with_to(p: &Element, to: &str) -> Element {
    let mut c = p.clone();
    stanza::set_attr(&mut c, "to", to);
    c
}

fn priority_of(p: &Element) -> i8 {
    p.get_child("priority", NS_CLIENT)
        .and_then(|e| e.text().trim().parse::<i32>().ok())
        .map(|v| v.clamp(-128, 127) as i8)
        .unwrap_or(0)
}

/// The stored roster of `user` merged with the items modules contribute (shared groups).
/// A contributed contact counts as a mutual subscription; a stored item for the same contact
/// keeps its name and groups but is upgraded to `both`.
pub async fn effective_roster(cx: &Context<'_>, user: &BareJid) -> Vec<RosterItem> {
    match cx.store().roster(&user_ref(user)).await {
        Ok((_, items)) => merge_contributed(cx, user, items).await,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            merge_contributed(cx, user, Vec::new()).await
        }
    }
}

async fn merge_contributed(
    cx: &Context<'_>,
    user: &BareJid,
    mut items: Vec<RosterItem>,
) -> Vec<RosterItem> {
    for m in cx.roster_modules() {
        for extra in m.roster_items(cx, user).await {
            if extra.jid == user.as_str() {
                continue;
            }
            match items.iter_mut().find(|i| i.jid == extra.jid) {
                Some(it) => {
                    it.subscription = Subscription::Both;
                    it.ask = false;
                }
                None => items.push(RosterItem {
                    subscription: Subscription::Both,
                    ..extra
                }),
            }
        }
    }
    items
}

/// Whether `contact` may receive `user`'s presence: `user` itself, a contact with a `from` or
/// `both` subscription, or a member of a shared group.
pub async fn shares_presence(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> bool {
    if contact == user {
        return true;
    }
    // One stored item and one membership question per module: a probe costs the same however
    // large the roster or the shared groups are.
    let stored = cx
        .store()
        .roster_item(&user_ref(user), contact.as_str())
        .await;
    if matches!(
        stored,
        Ok(Some(RosterItem {
            subscription: Subscription::From | Subscription::Both,
            ..
        }))
    ) {
        return true;
    }
    for m in cx.roster_modules() {
        if m.has_roster_item(cx, user, contact).await {
            return true;
        }
    }
    false
}

/// The effective roster of `user` and its version, for a roster get.
async fn roster_with_version(
    cx: &Context<'_>,
    user: &BareJid,
) -> Result<(String, Vec<RosterItem>), xmppd_storage::StorageError> {
    let (counter, stored) = cx.store().roster(&user_ref(user)).await?;
    let items = merge_contributed(cx, user, stored).await;
    Ok((roster_version(cx, user, counter).await, items))
}

/// The version of `user`'s roster whose stored part is at `counter` (RFC 6121 §2.6), in time
/// independent of the roster's size. The stored counter moves with every stored change and
/// every pushed change of a contributed item, but contributed (shared) items also change
/// while nobody is told (the user offline, the server down): each roster module's own version
/// goes into the string too, so that it names the content it stands for.
async fn roster_version(cx: &Context<'_>, user: &BareJid, counter: u64) -> String {
    let modules = cx.roster_modules();
    if modules.is_empty() {
        return counter.to_string();
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for m in modules {
        m.roster_items_version(cx, user).await.hash(&mut h);
    }
    format!("{counter}-{:x}", h.finish())
}

/// A stored item as the client sees it: a contact that a module also contributes counts as a
/// mutual subscription (as in [`merge_contributed`]).
async fn shown_item(cx: &Context<'_>, user: &BareJid, mut item: RosterItem) -> RosterItem {
    let Ok(contact) = BareJid::new(&item.jid) else {
        return item;
    };
    for m in cx.roster_modules() {
        if m.has_roster_item(cx, user, &contact).await {
            item.subscription = Subscription::Both;
            item.ask = false;
            break;
        }
    }
    item
}

/// The item modules contribute to `user`'s roster for `contact`, if any. A module's list is
/// built only when it has the contact.
async fn contributed_item(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Option<RosterItem> {
    for m in cx.roster_modules() {
        if !m.has_roster_item(cx, user, contact).await {
            continue;
        }
        let items = m.roster_items(cx, user).await;
        if let Some(it) = items.into_iter().find(|i| i.jid == contact.as_str()) {
            return Some(RosterItem {
                subscription: Subscription::Both,
                ask: false,
                ..it
            });
        }
    }
    None
}

/// A storage failure as the client sees it; the cause goes to the log only.
pub(crate) fn storage_failed(e: xmppd_storage::StorageError) -> StanzaError {
    tracing::error!(error = %e, "storage failed");
    StanzaError::storage_failed()
}

/// A contributed roster item of `user` appeared, changed or (`removed`) went away: roster push
/// to `user`'s sessions, and the contact's presence (or its end) to `user`'s available
/// resources, as if a mutual subscription began or ended (RFC 6121 §4).
pub(crate) async fn shared_item_changed(
    cx: &mut Context<'_>,
    user: &BareJid,
    item: &RosterItem,
    removed: bool,
) {
    let Ok(contact) = BareJid::new(&item.jid) else {
        return;
    };
    let uref = user_ref(user);
    // What a roster get shows from now on: a stored item for the contact keeps its name and
    // groups.
    let stored = match cx.store().roster_item(&uref, contact.as_str()).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            None
        }
    };
    let shown = match (stored, removed) {
        (Some(s), false) => Some(RosterItem {
            subscription: Subscription::Both,
            ask: false,
            ..s
        }),
        (Some(s), true) => Some(shown_item(cx, user, s).await),
        (None, false) => Some(RosterItem {
            subscription: Subscription::Both,
            ask: false,
            ..item.clone()
        }),
        (None, true) => None,
    };
    // Each push gets a version of its own: a client that kept only the first of several
    // changes must not later be told its copy is current.
    match cx.store().bump_roster_version(&uref).await {
        Ok(counter) => {
            let ver = roster_version(cx, user, counter).await;
            let el = match &shown {
                Some(it) => item_element(it, false),
                None => item_element(item, true),
            };
            push(cx, user, el, &ver);
        }
        // Not pushed without a new version; the module's version still moved, so the client
        // gets the whole roster at its next login.
        Err(e) => tracing::error!(error = %e, "roster version not moved: no push"),
    }
    if removed && shares_presence(cx, &contact, user).await {
        return; // still subscribed through the stored roster
    }
    // One direction only: the caller reports the change for each side whose user is online,
    // so the contact's side gets this user's presence from its own call.
    for r in cx
        .sessions()
        .resources(user)
        .into_iter()
        .filter(|r| r.available)
    {
        let presences = if removed {
            unavailable_presences(cx, &contact, r.jid.as_str())
        } else {
            available_presences(cx, &contact, r.jid.as_str())
        };
        for p in presences {
            cx.deliver(&r.jid, p);
        }
    }
}

/// The RFC 6121 rules as a module: presence from and to the accounts, subscriptions, the
/// roster IQs of a session, and what an account's removal changes for its contacts.
pub(crate) struct Im;

/// Takes the element a hook was handed by `&mut` (the hook consumes it: nothing follows it).
fn take(el: &mut Element) -> Element {
    std::mem::replace(el, Element::bare("presence", NS_CLIENT))
}

#[async_trait]
impl Module for Im {
    fn name(&self) -> &'static str {
        "im"
    }

    fn hooks(&self) -> Hooks {
        Hooks {
            presence_out: true,
            iq_out: true,
            presence_to_account: true,
            ..Hooks::NONE
        }
    }

    /// Roster versioning (RFC 6121 §2.6) and subscription pre-approval (§3.4).
    fn stream_features(&self, _host: &str) -> Vec<Element> {
        vec![
            Element::bare("ver", stanza::NS_ROSTERVER),
            Element::bare("sub", stanza::NS_PREAPPROVAL),
        ]
    }

    async fn on_presence_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        state: &mut PresenceState,
        pres: &mut Element,
    ) -> HookAction {
        own_presence(cx, session, state, take(pres)).await;
        HookAction::Stop(None)
    }

    async fn on_iq_out(
        &self,
        cx: &mut Context<'_>,
        session: &ClientSession,
        iq: &mut Element,
    ) -> HookAction {
        let own = iq.attr("to").and_then(|t| BareJid::new(t).ok());
        let Some(query) = iq.get_child("query", NS_ROSTER) else {
            return HookAction::Continue;
        };
        if own.as_ref() != Some(&session.jid.bare()) {
            return HookAction::Continue;
        }
        let kind = match iq.attr("type") {
            Some("set") => IqKind::Set,
            _ => IqKind::Get,
        };
        let query = query.clone();
        roster_iq(cx, session, iq, kind, query).await;
        HookAction::Stop(None)
    }

    async fn on_presence_to_account(
        &self,
        cx: &mut Context<'_>,
        pres: &mut Element,
        to: &Jid,
    ) -> HookAction {
        presence_to_account(cx, take(pres), to).await;
        HookAction::Stop(None)
    }

    async fn on_presence_end(
        &self,
        cx: &mut Context<'_>,
        jid: &FullJid,
        session_id: SessionId,
        state: &mut PresenceState,
    ) {
        end_presence(cx, jid, session_id, state).await;
    }

    async fn on_account_removal(
        &self,
        cx: &mut Context<'_>,
        user: &BareJid,
        removal: &AccountRemoval,
        online: &[FullJid],
    ) {
        account_removed(cx, user, removal, online).await;
    }
}

async fn own_presence(
    cx: &mut Context<'_>,
    session: &ClientSession,
    state: &mut PresenceState,
    mut pres: Element,
) {
    let max = cx.config().max_presence_bytes;
    if xmppd_core::queue::element_size(&pres) > max {
        // Presence is kept (the last one answers probes; rooms keep their occupants') and
        // copied to every contact and occupant: a large one costs that many times over.
        let text = format!("presence larger than {max} bytes");
        let err = StanzaError::with_text(Condition::PolicyViolation, &text);
        if let Some(reply) = stanza::error_reply(&pres, &err) {
            cx.deliver(&session.jid, reply);
        }
        return;
    }
    let kind = pres.attr("type").map(str::to_owned);
    let user = session.jid.bare();
    if let Some(to) = pres.attr("to").and_then(|t| Jid::new(t).ok()) {
        match kind.as_deref() {
            Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
                let contact = to.bare();
                if let Err(e) = outbound_subscription(cx, &user, k, &contact, pres.clone()).await {
                    if let Some(reply) = stanza::error_reply(&pres, &e) {
                        cx.deliver(&session.jid, reply);
                    }
                }
            }
            Some("probe") => {}
            None => {
                // Bounded: a client cannot grow its session (and its logout) without limit.
                if state.directed.len() < MAX_DIRECTED || state.directed.contains(&to) {
                    state.directed.insert(to);
                }
                cx.send(pres);
            }
            Some("unavailable") => {
                state.directed.remove(&to);
                cx.send(pres);
            }
            _ => cx.send(pres),
        }
        return;
    }
    let from = session.jid.to_string();
    let uref = user_ref(&user);
    match kind.as_deref() {
        None => {
            let prio = priority_of(&pres);
            let first = !state.available;
            state.available = true;
            stanza::remove_attr(&mut pres, "to");
            let shared = Arc::new(pres.clone());
            cx.sessions().update(&session.jid, session.id, &mut |r| {
                r.available = true;
                r.priority = prio;
                r.presence = Some(shared.clone());
            });
            let items = effective_roster(cx, &user).await;
            for it in items
                .iter()
                .filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
            {
                cx.send(with_to(&pres, &it.jid));
            }
            // RFC 6121 §4.2.2/§4.4.2: to every available resource of the user, the sender
            // included (its own presence coming back tells a client it is online).
            let others = cx.sessions().resources(&user);
            for r in others.iter().filter(|r| r.available) {
                cx.deliver(&r.jid, with_to(&pres, r.jid.as_str()));
            }
            if first {
                // RFC 6121 §4.2.2: probe the contacts we are subscribed to, and show this
                // resource its siblings.
                for it in items
                    .iter()
                    .filter(|i| matches!(i.subscription, Subscription::To | Subscription::Both))
                {
                    cx.send(presence(Some("probe"), user.as_str(), &it.jid));
                }
                for r in others
                    .iter()
                    .filter(|r| r.jid != session.jid && r.available)
                {
                    if let Some(p) = &r.presence {
                        cx.deliver(&session.jid, with_to(p, &from));
                    }
                }
                match cx.store().pending_subscriptions(&uref).await {
                    Ok(pending) => {
                        for (_, xml) in pending {
                            if let Ok(p) = xml.parse::<Element>() {
                                cx.deliver(&session.jid, p);
                            }
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "pending subscriptions read failed"),
                }
            }
            if prio >= 0 && !state.announced {
                state.announced = true;
                for m in cx.modules() {
                    m.on_available(cx, &session.jid).await;
                }
            }
        }
        Some("unavailable") => {
            stanza::remove_attr(&mut pres, "to");
            go_unavailable(cx, &session.jid, session.id, state, pres).await;
        }
        _ => {}
    }
}

/// Unavailable presence `pres` of session `jid` (`id`): to the subscribers, to the entities it
/// sent directed presence to, and to the account's other available resources (RFC 6121
/// §4.5.2).
async fn go_unavailable(
    cx: &mut Context<'_>,
    jid: &FullJid,
    id: SessionId,
    state: &mut PresenceState,
    pres: Element,
) {
    state.available = false;
    cx.sessions().update(jid, id, &mut |r| {
        r.available = false;
        r.presence = None;
    });
    let user = jid.bare();
    let items = effective_roster(cx, &user).await;
    let mut sent: Vec<Jid> = Vec::new();
    for it in items
        .iter()
        .filter(|i| matches!(i.subscription, Subscription::From | Subscription::Both))
    {
        cx.send(with_to(&pres, &it.jid));
        if let Ok(j) = Jid::new(&it.jid) {
            sent.push(j);
        }
    }
    for target in std::mem::take(&mut state.directed) {
        if !sent.contains(&target.bare().into()) {
            cx.send(with_to(&pres, target.as_str()));
        }
    }
    for r in cx
        .sessions()
        .resources(&user)
        .iter()
        .filter(|r| &r.jid != jid && r.available)
    {
        cx.deliver(&r.jid, with_to(&pres, r.jid.as_str()));
    }
}

/// Ends the presence that session `jid` (`id`) gave out, as RFC 6121 §4.5.2 has it for a
/// session that ends without saying so: unavailable to the subscribers and the account's other
/// resources if it was available, and to every entity it sent directed presence to (chat rooms
/// included) in any case. The core calls it once, under the session's presence lock, when the
/// session unbinds or a successor binds the same resource (see `Module::on_presence_end`).
async fn end_presence(
    cx: &mut Context<'_>,
    jid: &FullJid,
    id: SessionId,
    state: &mut PresenceState,
) {
    let unavailable = stanza::elem(
        "presence",
        NS_CLIENT,
        &[("type", "unavailable"), ("from", jid.as_str())],
    );
    if state.available {
        go_unavailable(cx, jid, id, state, unavailable).await;
    } else {
        // Directed presence without a broadcast one (e.g. a chat room joined before initial
        // presence): those entities still learn that the session is gone.
        for target in std::mem::take(&mut state.directed) {
            cx.send(with_to(&unavailable, target.as_str()));
        }
    }
}

fn route_presence(cx: &mut Context<'_>, kind: &str, from: &BareJid, to: &BareJid) {
    cx.send(presence(Some(kind), from.as_str(), to.as_str()));
}

/// Presence of every available resource of `user`, each addressed to `to`.
fn available_presences(cx: &Context<'_>, user: &BareJid, to: &str) -> Vec<Element> {
    cx.sessions()
        .resources(user)
        .iter()
        .filter(|r| r.available)
        .filter_map(|r| r.presence.as_ref().map(|p| with_to(p, to)))
        .collect()
}

fn unavailable_presences(cx: &Context<'_>, user: &BareJid, to: &str) -> Vec<Element> {
    cx.sessions()
        .resources(user)
        .iter()
        .filter(|r| r.available)
        .map(|r| presence(Some("unavailable"), r.jid.as_str(), to))
        .collect()
}

/// Stores `item` and pushes it, as the client sees it, with the version the write produced:
/// no read of the roster. A failed write pushes nothing, and its caller routes nothing either.
async fn save_and_push(
    cx: &mut Context<'_>,
    user: &BareJid,
    item: &RosterItem,
) -> Result<(), StanzaError> {
    let counter =
        (cx.store().set_roster_item(&user_ref(user), item).await).map_err(storage_failed)?;
    let ver = roster_version(cx, user, counter).await;
    let shown = shown_item(cx, user, item.clone()).await;
    push(cx, user, item_element(&shown, false), &ver);
    Ok(())
}

/// Roster push of `item`, just stored for `user`, with the version it belongs to.
async fn push_stored(cx: &mut Context<'_>, user: &BareJid, item: &RosterItem) {
    match roster_with_version(cx, user).await {
        Ok((ver, items)) => {
            // What the client sees is the merged item (a shared contact shows as `both`).
            let shown = items.iter().find(|i| i.jid == item.jid).unwrap_or(item);
            push(cx, user, item_element(shown, false), &ver);
        }
        Err(e) => tracing::error!(error = %e, "roster read failed"),
    }
}

/// Whether storing an item for `contact` would take `user`'s roster past its limit (only a new
/// contact can).
async fn roster_full_for(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &str,
) -> Result<bool, StanzaError> {
    let uref = user_ref(user);
    let store = cx.store();
    if store
        .roster_item(&uref, contact)
        .await
        .map_err(storage_failed)?
        .is_some()
    {
        return Ok(false);
    }
    let len = store.roster_len(&uref).await.map_err(storage_failed)?;
    Ok(len >= cx.config().max_roster_items)
}

/// Roster push (RFC 6121 §2.1.6) to every resource that requested the roster.
fn push(cx: &mut Context<'_>, user: &BareJid, item: Element, ver: &str) {
    let mut query = stanza::elem("query", NS_ROSTER, &[("ver", ver)]);
    query.append_child(item);
    for r in cx
        .sessions()
        .resources(user)
        .iter()
        .filter(|r| r.interested)
    {
        let iq = stanza::iq_push(
            r.jid.as_str(),
            &format!("push{}", cx.next_id()),
            query.clone(),
        );
        cx.deliver(&r.jid, iq);
    }
}

fn item_element(item: &RosterItem, removed: bool) -> Element {
    let mut e = stanza::elem("item", NS_ROSTER, &[("jid", &item.jid)]);
    if removed {
        stanza::set_attr(&mut e, "subscription", "remove");
        return e;
    }
    stanza::set_attr(&mut e, "subscription", item.subscription.as_str());
    if let Some(n) = &item.name {
        stanza::set_attr(&mut e, "name", n.as_str());
    }
    if item.ask {
        stanza::set_attr(&mut e, "ask", "subscribe");
    }
    if item.approved {
        stanza::set_attr(&mut e, "approved", "true");
    }
    for g in &item.groups {
        e.append_child(stanza::text_elem("group", NS_ROSTER, g));
    }
    e
}

async fn item_or_new(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<RosterItem, StanzaError> {
    let stored = cx
        .store()
        .roster_item(&user_ref(user), contact.as_str())
        .await
        .map_err(storage_failed)?;
    Ok(stored.unwrap_or_else(|| RosterItem {
        jid: contact.to_string(),
        ..Default::default()
    }))
}

async fn has_pending(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<bool, StanzaError> {
    let pending = cx
        .store()
        .pending_subscriptions(&user_ref(user))
        .await
        .map_err(storage_failed)?;
    Ok(pending.iter().any(|(c, _)| c == contact.as_str()))
}

async fn remove_pending(
    cx: &Context<'_>,
    user: &BareJid,
    contact: &BareJid,
) -> Result<(), StanzaError> {
    (cx.store())
        .remove_pending_subscription(&user_ref(user), contact.as_str())
        .await
        .map_err(storage_failed)
}

/// A subscription-related presence from local `user` to `contact` (RFC 6121 §3, outbound side).
/// The roster change is stored before anything is routed; when it cannot be, the error is the
/// sender's and nothing goes out.
async fn outbound_subscription(
    cx: &mut Context<'_>,
    user: &BareJid,
    kind: &str,
    contact: &BareJid,
    mut pres: Element,
) -> Result<(), StanzaError> {
    // §3.1.2: outbound subscription stanzas carry the user's bare JID.
    stanza::set_attr(&mut pres, "from", user.as_str());
    stanza::set_attr(&mut pres, "to", contact.as_str());
    let mut item = item_or_new(cx, user, contact).await?;
    match kind {
        "subscribe" => {
            if roster_full_for(cx, user, contact.as_str()).await? {
                // A request the roster could not record would leave both sides out of step.
                tracing::info!(user = %user, "roster full: subscription request not sent");
                return Err(StanzaError::with_text(
                    Condition::ResourceConstraint,
                    "roster full",
                ));
            }
            if !matches!(item.subscription, Subscription::To | Subscription::Both) && !item.ask {
                item.ask = true;
                save_and_push(cx, user, &item).await?;
            }
            cx.send(pres);
        }
        "subscribed" => {
            if has_pending(cx, user, contact).await? {
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::Both => Subscription::Both,
                };
                item.approved = false;
                save_and_push(cx, user, &item).await?;
                forget_request(cx, user, contact).await;
                cx.send(pres);
                cx.send_all(available_presences(cx, user, contact.as_str()));
            } else if matches!(item.subscription, Subscription::None | Subscription::To)
                && !item.approved
            {
                // §3.4: pre-approval, remembered until the contact asks.
                item.approved = true;
                save_and_push(cx, user, &item).await?;
            }
        }
        "unsubscribe" => {
            let before = (item.subscription, item.ask);
            item.subscription = match item.subscription {
                Subscription::Both | Subscription::From => Subscription::From,
                _ => Subscription::None,
            };
            item.ask = false;
            if before != (item.subscription, item.ask) {
                save_and_push(cx, user, &item).await?;
            }
            cx.send(pres);
        }
        "unsubscribed" => {
            let pending = has_pending(cx, user, contact).await?;
            let before = (item.subscription, item.approved);
            item.subscription = match item.subscription {
                Subscription::Both | Subscription::To => Subscription::To,
                _ => Subscription::None,
            };
            item.approved = false;
            let changed = before != (item.subscription, item.approved);
            if changed {
                save_and_push(cx, user, &item).await?;
                if pending {
                    forget_request(cx, user, contact).await;
                }
            } else if pending {
                // Declining the request is the whole change here.
                remove_pending(cx, user, contact).await?;
            }
            if pending || changed {
                cx.send(pres);
                if before.0 == Subscription::From || before.0 == Subscription::Both {
                    cx.send_all(unavailable_presences(cx, user, contact.as_str()));
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Drops `contact`'s answered subscription request after the roster change that answers it was
/// stored. That change goes out whatever happens here; a request left behind by a failure is
/// only shown again at the next login.
async fn forget_request(cx: &mut Context<'_>, user: &BareJid, contact: &BareJid) {
    let _ = remove_pending(cx, user, contact).await;
}

/// Tells the contacts of the removed account `user` what removing it changed in their data
/// (`removal`): a roster push of the item that lost its subscription, then, as if `user` had
/// cancelled both directions (RFC 6121 §3.2.2, §3.3.2), `unsubscribe` and `unsubscribed`, and
/// the end of the presence of `user`'s resources that were `online` to those who received it.
/// The accounts whose request from `user` was dropped get the two cancellations too.
async fn account_removed(
    cx: &mut Context<'_>,
    user: &BareJid,
    removal: &AccountRemoval,
    online: &[FullJid],
) {
    let mut told: Vec<&UserRef> = Vec::new();
    for (holder, before) in &removal.contacts {
        let Ok(holder_jid) = BareJid::new(&holder.jid()) else {
            continue;
        };
        let now = RosterItem {
            subscription: Subscription::None,
            ask: false,
            approved: false,
            ..before.clone()
        };
        push_stored(cx, &holder_jid, &now).await;
        for kind in ["unsubscribe", "unsubscribed"] {
            to_available(
                cx,
                &holder_jid,
                &presence(Some(kind), user.as_str(), holder_jid.as_str()),
            );
        }
        if matches!(before.subscription, Subscription::To | Subscription::Both) {
            for r in online {
                let gone = presence(Some("unavailable"), r.as_str(), holder_jid.as_str());
                to_available(cx, &holder_jid, &gone);
            }
        }
        told.push(holder);
    }
    for asked in removal
        .requests_dropped
        .iter()
        .filter(|u| !told.contains(u))
    {
        let Ok(asked) = BareJid::new(&asked.jid()) else {
            continue;
        };
        for kind in ["unsubscribe", "unsubscribed"] {
            to_available(
                cx,
                &asked,
                &presence(Some(kind), user.as_str(), asked.as_str()),
            );
        }
    }
    // Contacts on other servers are told the way the user would tell them.
    for item in &removal.roster {
        let Ok(contact) = BareJid::new(&item.jid) else {
            continue;
        };
        if !cx.is_local_host(contact.domain().as_str()) {
            for kind in ["unsubscribe", "unsubscribed"] {
                route_presence(cx, kind, user, &contact);
            }
        }
    }
}

/// Delivers `p` to every available resource of `user`.
fn to_available(cx: &mut Context<'_>, user: &BareJid, p: &Element) {
    let p = Arc::new(p.clone());
    for r in cx.sessions().resources(user).iter().filter(|r| r.available) {
        cx.deliver_shared(&r.jid, p.clone());
    }
}

/// Presence addressed to a local account (RFC 6121 §4 and §3, inbound side).
async fn presence_to_account(cx: &mut Context<'_>, pres: Element, to: &Jid) {
    let kind = pres.attr("type").map(str::to_owned);
    let user = to.bare();
    let Some(from) = pres.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let contact = from.bare();
    match kind.as_deref() {
        None | Some("unavailable") | Some("error") => match to.try_as_full() {
            Ok(full) => {
                cx.deliver(full, pres);
            }
            Err(_) => to_available(cx, &user, &pres),
        },
        Some("probe") => {
            if !shares_presence(cx, &user, &contact).await {
                // RFC 6121 §4.3.2: no subscription (or no such account): say so, which lets
                // the prober's server repair a roster that went out of step.
                route_presence(cx, "unsubscribed", &user, &contact);
                return;
            }
            let answers = available_presences(cx, &user, from.as_str());
            if answers.is_empty() {
                cx.send(presence(Some("unavailable"), user.as_str(), from.as_str()));
            }
            for p in answers {
                cx.send(p);
            }
        }
        Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
            if let Err(e) = inbound_subscription(cx, &user, k, &contact, pres.clone()).await {
                cx.bounce(&pres, e);
            }
        }
        _ => {}
    }
}

/// A subscription-related presence from `contact` to local `user` (RFC 6121 §3, inbound side).
/// What it changes is stored before the user is shown anything; when it cannot be, the error
/// goes back to the contact.
async fn inbound_subscription(
    cx: &mut Context<'_>,
    user: &BareJid,
    kind: &str,
    contact: &BareJid,
    mut pres: Element,
) -> Result<(), StanzaError> {
    let uref = user_ref(user);
    stanza::set_attr(&mut pres, "to", user.as_str());
    match kind {
        "subscribe" => {
            if !cx.store().user_exists(&uref).await.unwrap_or(false) {
                route_presence(cx, "unsubscribed", user, contact);
                return Ok(());
            }
            let mut item = item_or_new(cx, user, contact).await?;
            if matches!(item.subscription, Subscription::From | Subscription::Both) {
                route_presence(cx, "subscribed", user, contact);
            } else if item.approved {
                item.approved = false;
                item.subscription = match item.subscription {
                    Subscription::To => Subscription::Both,
                    _ => Subscription::From,
                };
                save_and_push(cx, user, &item).await?;
                route_presence(cx, "subscribed", user, contact);
                cx.send_all(available_presences(cx, user, contact.as_str()));
            } else {
                let pres = subscription_request(&pres);
                let pending = cx.store().pending_subscriptions(&uref).await;
                if pending.is_ok_and(|p| p.len() >= MAX_PENDING_SUBSCRIPTIONS) {
                    tracing::info!(user = %user, "too many pending subscription requests: dropped");
                    return Ok(());
                }
                let mut xml = Vec::new();
                xmppd_stream::serialize(&pres, "", &mut xml);
                let xml = String::from_utf8_lossy(&xml);
                (cx.store())
                    .add_pending_subscription(&uref, contact.as_str(), &xml)
                    .await
                    .map_err(storage_failed)?;
                to_available(cx, user, &pres);
            }
        }
        "subscribed" => {
            let mut item = item_or_new(cx, user, contact).await?;
            if item.ask && matches!(item.subscription, Subscription::None | Subscription::From) {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::From => Subscription::Both,
                    _ => Subscription::To,
                };
                save_and_push(cx, user, &item).await?;
                to_available(cx, user, &pres);
            }
        }
        "unsubscribe" => {
            let mut item = item_or_new(cx, user, contact).await?;
            if matches!(item.subscription, Subscription::From | Subscription::Both) {
                item.subscription = match item.subscription {
                    Subscription::Both => Subscription::To,
                    _ => Subscription::None,
                };
                save_and_push(cx, user, &item).await?;
                forget_request(cx, user, contact).await;
                to_available(cx, user, &pres);
                cx.send_all(unavailable_presences(cx, user, contact.as_str()));
            } else {
                // A request withdrawn before it was answered.
                remove_pending(cx, user, contact).await?;
            }
        }
        "unsubscribed" => {
            let mut item = item_or_new(cx, user, contact).await?;
            if item.ask || matches!(item.subscription, Subscription::To | Subscription::Both) {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::Both => Subscription::From,
                    Subscription::From => Subscription::From,
                    _ => Subscription::None,
                };
                save_and_push(cx, user, &item).await?;
                to_available(cx, user, &pres);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `jabber:iq:roster` get/set from the account's own session (RFC 6121 §2).
async fn roster_iq(
    cx: &mut Context<'_>,
    session: &ClientSession,
    iq: &Element,
    kind: IqKind,
    query: Element,
) {
    let user = session.jid.bare();
    let reply = match kind {
        IqKind::Get => {
            cx.sessions()
                .update(&session.jid, session.id, &mut |r| r.interested = true);
            match roster_with_version(cx, &user).await {
                Ok((ver_s, items)) => {
                    if query.attr("ver") == Some(ver_s.as_str()) {
                        // §2.6.3: unchanged since the client's version: empty result, pushes follow.
                        Ok(None)
                    } else {
                        let mut q = stanza::elem("query", NS_ROSTER, &[("ver", &ver_s)]);
                        for it in &items {
                            q.append_child(item_element(it, false));
                        }
                        Ok(Some(q))
                    }
                }
                Err(e) => Err(storage_failed(e)),
            }
        }
        IqKind::Set => roster_set(cx, &user, &query).await,
    };
    let mut iq = iq.clone();
    stanza::remove_attr(&mut iq, "to");
    let out = match reply {
        Ok(payload) => iq_result(&iq, payload),
        Err(e) => match stanza::error_reply(&iq, &e) {
            Some(r) => r,
            None => return,
        },
    };
    let mut out = out;
    stanza::set_attr(&mut out, "to", session.jid.to_string());
    cx.deliver(&session.jid, out);
}

async fn roster_set(
    cx: &mut Context<'_>,
    user: &BareJid,
    query: &Element,
) -> Result<Option<Element>, StanzaError> {
    let mut items = query.children().filter(|c| c.is("item", NS_ROSTER));
    let (Some(el), None) = (items.next(), items.next()) else {
        return Err(StanzaError::with_text(
            Condition::BadRequest,
            "exactly one item expected",
        ));
    };
    let contact = el
        .attr("jid")
        .and_then(|j| xmppd_core::address::parse_jid(j).ok())
        .ok_or_else(|| StanzaError::new(Condition::BadRequest))?
        .bare();
    let uref = user_ref(user);
    if el.attr("subscription") == Some("remove") {
        let Some(item) =
            (cx.store().roster_item(&uref, contact.as_str()).await).map_err(storage_failed)?
        else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        // Forgotten first: if that fails, the contact is told nothing.
        let counter = (cx.store())
            .remove_roster_item(&uref, contact.as_str())
            .await
            .map_err(storage_failed)?;
        forget_request(cx, user, &contact).await;
        // §2.5.2: cancel both directions.
        if item.ask || matches!(item.subscription, Subscription::To | Subscription::Both) {
            route_presence(cx, "unsubscribe", user, &contact);
        }
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            route_presence(cx, "unsubscribed", user, &contact);
            cx.send_all(unavailable_presences(cx, user, contact.as_str()));
        }
        let ver = roster_version(cx, user, counter).await;
        // A contact that a shared group still provides stays, as the merged item.
        match contributed_item(cx, user, &contact).await {
            Some(left) => push(cx, user, item_element(&left, false), &ver),
            None => push(cx, user, item_element(&item, true), &ver),
        }
        return Ok(None);
    }
    let mut groups: Vec<String> = Vec::new();
    for g in el.children().filter(|c| c.is("group", NS_ROSTER)) {
        if groups.len() == MAX_GROUPS {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "too many groups",
            ));
        }
        let name = g.text();
        if name.is_empty() || name.len() > 1023 {
            return Err(StanzaError::with_text(
                Condition::NotAcceptable,
                "bad group name",
            ));
        }
        if groups.contains(&name) {
            return Err(StanzaError::with_text(
                Condition::BadRequest,
                "duplicate group",
            ));
        }
        groups.push(name);
    }
    let name = el.attr("name").filter(|n| !n.is_empty()).map(str::to_owned);
    if name.as_ref().is_some_and(|n| n.len() > 1023) {
        return Err(StanzaError::with_text(
            Condition::NotAcceptable,
            "name too long",
        ));
    }
    if roster_full_for(cx, user, contact.as_str()).await? {
        return Err(StanzaError::with_text(
            Condition::ResourceConstraint,
            "roster full",
        ));
    }
    let mut item = item_or_new(cx, user, &contact).await?;
    item.name = name;
    item.groups = groups;
    save_and_push(cx, user, &item).await?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_subscription_requests_keep_only_status_and_nick() {
        let xml = format!(
            "<presence xmlns='jabber:client' from='a@x' to='b@x' type='subscribe'>\
             <status>hi</status><nick xmlns='{NS_NICK}'>A</nick>\
             <x xmlns='urn:example'>junk</x><status>{}</status></presence>",
            "z".repeat(MAX_REQUEST_STATUS + 1)
        );
        let kept = subscription_request(&xml.parse().unwrap());
        assert_eq!(kept.attr("type"), Some("subscribe"));
        assert_eq!(kept.attr("from"), Some("a@x"));
        let names: Vec<_> = kept.children().map(|c| c.name().to_owned()).collect();
        assert_eq!(names, ["status", "nick"]);
    }

    #[test]
    fn priority_parsing_clamps() {
        let mut p = Element::bare("presence", NS_CLIENT);
        p.append_child(stanza::text_elem("priority", NS_CLIENT, "300"));
        assert_eq!(priority_of(&p), 127);
        let mut p = Element::bare("presence", NS_CLIENT);
        p.append_child(stanza::text_elem("priority", NS_CLIENT, "-5"));
        assert_eq!(priority_of(&p), -5);
        assert_eq!(priority_of(&Element::bare("presence", NS_CLIENT)), 0);
    }
}
