//! RFC 6121 instant messaging rules: roster management (§2), subscriptions with
//! pre-approval (§3), presence broadcast, probes and directed presence (§4), and the choice of
//! resources for a message to a bare JID (§8.5.2).

use std::sync::Arc;

use jid::{BareJid, FullJid, Jid};
use minidom::Element;
use xmppd_storage::{AccountRemoval, RosterItem, Subscription, UserRef};

use crate::context::Context;
use crate::module::IqKind;
use crate::router::Resource;
use crate::server::user_ref;
use crate::session::ClientSession;
use crate::stanza::{self, iq_result, Condition, StanzaError, NS_CLIENT, NS_ROSTER};

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

/// Resources that receive a message of `kind` sent to their bare JID (RFC 6121 §8.5.2.1).
///
/// `normal` and `chat` go to the available resources of highest non-negative priority — all of
/// them when several share it; `headline` to every available resource with non-negative
/// priority; `groupchat` and anything else to none.
pub fn message_targets(resources: &[Resource], kind: &str) -> Vec<FullJid> {
    let eligible = resources.iter().filter(|r| r.available && r.priority >= 0);
    match kind {
        "normal" | "chat" | "error" => {
            let Some(top) = eligible.clone().map(|r| r.priority).max() else {
                return Vec::new();
            };
            eligible
                .filter(|r| r.priority == top)
                .map(|r| r.jid.clone())
                .collect()
        }
        "headline" => eligible.map(|r| r.jid.clone()).collect(),
        _ => Vec::new(),
    }
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
pub(crate) async fn effective_roster(cx: &Context<'_>, user: &BareJid) -> Vec<RosterItem> {
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
    for m in cx.server().roster_modules() {
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
pub(crate) async fn shares_presence(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> bool {
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
    for m in cx.server().roster_modules() {
        if m.has_roster_item(cx, user, contact).await {
            return true;
        }
    }
    false
}

/// The effective roster of `user` and its version string. Contributed (shared) items change
/// without a stored version bump, so they are folded into the version: a client's cached copy
/// is invalidated when they change.
async fn roster_with_version(
    cx: &Context<'_>,
    user: &BareJid,
) -> Result<(String, Vec<RosterItem>), xmppd_storage::StorageError> {
    let (ver, stored) = cx.store().roster(&user_ref(user)).await?;
    let items = merge_contributed(cx, user, stored).await;
    // The stored counter alone would miss changes of contributed items: the version names the
    // content it stands for (RFC 6121 §2.6), so both go into it.
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for it in &items {
        (
            &it.jid,
            &it.name,
            it.subscription.as_str(),
            it.ask,
            &it.groups,
        )
            .hash(&mut h);
    }
    Ok((format!("{ver}-{:x}", h.finish()), items))
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
    let ver = match roster_with_version(cx, user).await {
        Ok((ver, _)) => ver,
        Err(e) => {
            tracing::error!(error = %e, "roster read failed");
            return;
        }
    };
    let shown = RosterItem {
        subscription: Subscription::Both,
        ..item.clone()
    };
    push(cx, user, item_element(&shown, removed), &ver);
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

/// Presence sent by a client session.
pub(crate) async fn presence_from_client(
    cx: &mut Context<'_>,
    session: &mut ClientSession,
    mut pres: Element,
) {
    let max = cx.config().max_presence_bytes;
    if crate::queue::element_size(&pres) > max {
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
    let user = session.jid.to_bare();
    if let Some(to) = pres.attr("to").and_then(|t| Jid::new(t).ok()) {
        match kind.as_deref() {
            Some(k @ ("subscribe" | "subscribed" | "unsubscribe" | "unsubscribed")) => {
                outbound_subscription(cx, &user, k, &to.to_bare(), pres.clone()).await;
            }
            Some("probe") => {}
            None => {
                // Bounded: a client cannot grow its session (and its logout) without limit.
                if session.directed.len() < MAX_DIRECTED || session.directed.contains(&to) {
                    session.directed.insert(to);
                }
                cx.send(pres);
            }
            Some("unavailable") => {
                session.directed.remove(&to);
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
            let first = !session.available;
            session.available = true;
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
            if prio >= 0 && !session.offline_done {
                session.offline_done = true;
                let server = cx.server().clone();
                for m in server.modules() {
                    m.on_available(cx, &session.jid).await;
                }
            }
        }
        Some("unavailable") => {
            session.available = false;
            stanza::remove_attr(&mut pres, "to");
            cx.sessions().update(&session.jid, session.id, &mut |r| {
                r.available = false;
                r.presence = None;
            });
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
            for target in std::mem::take(&mut session.directed) {
                if !sent.contains(&target.to_bare().into()) {
                    cx.send(with_to(&pres, target.as_str()));
                }
            }
            for r in cx
                .sessions()
                .resources(&user)
                .iter()
                .filter(|r| r.jid != session.jid && r.available)
            {
                cx.deliver(&r.jid, with_to(&pres, r.jid.as_str()));
            }
        }
        _ => {}
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

async fn save_and_push(cx: &mut Context<'_>, user: &BareJid, item: &RosterItem) {
    if let Err(e) = cx.store().set_roster_item(&user_ref(user), item).await {
        tracing::error!(error = %e, "roster write failed");
        return;
    }
    push_stored(cx, user, item).await;
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
async fn roster_full_for(cx: &Context<'_>, user: &BareJid, contact: &str) -> bool {
    let uref = user_ref(user);
    if matches!(cx.store().roster_item(&uref, contact).await, Ok(Some(_))) {
        return false;
    }
    let count = cx.store().roster(&uref).await.map(|(_, items)| items.len());
    count.is_ok_and(|n| n >= cx.config().max_roster_items)
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
        let mut iq = stanza::elem(
            "iq",
            NS_CLIENT,
            &[
                ("type", "set"),
                ("id", &format!("push{}", cx.next_id())),
                ("to", r.jid.as_str()),
            ],
        );
        iq.append_child(query.clone());
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

async fn item_or_new(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> RosterItem {
    match cx
        .store()
        .roster_item(&user_ref(user), contact.as_str())
        .await
    {
        Ok(Some(it)) => it,
        _ => RosterItem {
            jid: contact.to_string(),
            ..Default::default()
        },
    }
}

async fn has_pending(cx: &Context<'_>, user: &BareJid, contact: &BareJid) -> bool {
    cx.store()
        .pending_subscriptions(&user_ref(user))
        .await
        .map(|v| v.iter().any(|(c, _)| c == contact.as_str()))
        .unwrap_or(false)
}

/// A subscription-related presence from local `user` to `contact` (RFC 6121 §3, outbound side).
async fn outbound_subscription(
    cx: &mut Context<'_>,
    user: &BareJid,
    kind: &str,
    contact: &BareJid,
    mut pres: Element,
) {
    // §3.1.2: outbound subscription stanzas carry the user's bare JID.
    stanza::set_attr(&mut pres, "from", user.as_str());
    stanza::set_attr(&mut pres, "to", contact.as_str());
    let mut item = item_or_new(cx, user, contact).await;
    let uref = user_ref(user);
    match kind {
        "subscribe" => {
            if roster_full_for(cx, user, contact.as_str()).await {
                // A request the roster could not record would leave both sides out of step.
                tracing::info!(user = %user, "roster full: subscription request not sent");
                return;
            }
            if !matches!(item.subscription, Subscription::To | Subscription::Both) && !item.ask {
                item.ask = true;
                save_and_push(cx, user, &item).await;
            }
            cx.send(pres);
        }
        "subscribed" => {
            if has_pending(cx, user, contact).await {
                item.subscription = match item.subscription {
                    Subscription::None | Subscription::From => Subscription::From,
                    Subscription::To | Subscription::Both => Subscription::Both,
                };
                item.approved = false;
                let _ = cx
                    .store()
                    .remove_pending_subscription(&uref, contact.as_str())
                    .await;
                save_and_push(cx, user, &item).await;
                cx.send(pres);
                cx.send_all(available_presences(cx, user, contact.as_str()));
            } else if matches!(item.subscription, Subscription::None | Subscription::To)
                && !item.approved
            {
                // §3.4: pre-approval, remembered until the contact asks.
                item.approved = true;
                save_and_push(cx, user, &item).await;
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
                save_and_push(cx, user, &item).await;
            }
            cx.send(pres);
        }
        "unsubscribed" => {
            let pending = has_pending(cx, user, contact).await;
            if pending {
                let _ = cx
                    .store()
                    .remove_pending_subscription(&uref, contact.as_str())
                    .await;
            }
            let before = (item.subscription, item.approved);
            item.subscription = match item.subscription {
                Subscription::Both | Subscription::To => Subscription::To,
                _ => Subscription::None,
            };
            item.approved = false;
            let changed = before != (item.subscription, item.approved);
            if changed {
                save_and_push(cx, user, &item).await;
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
}

/// Tells the contacts of the removed account `user` what removing it changed in their data
/// (`removal`): a roster push of the item that lost its subscription, then, as if `user` had
/// cancelled both directions (RFC 6121 §3.2.2, §3.3.2), `unsubscribe` and `unsubscribed`, and
/// the end of the presence of `user`'s resources that were `online` to those who received it.
/// The accounts whose request from `user` was dropped get the two cancellations too.
pub(crate) async fn account_removed(
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
pub(crate) async fn presence_to_account(cx: &mut Context<'_>, pres: Element, to: Jid) {
    let kind = pres.attr("type").map(str::to_owned);
    let user = to.to_bare();
    let Some(from) = pres.attr("from").and_then(|f| Jid::new(f).ok()) else {
        return;
    };
    let contact = from.to_bare();
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
            inbound_subscription(cx, &user, k, &contact, pres).await;
        }
        _ => {}
    }
}

async fn inbound_subscription(
    cx: &mut Context<'_>,
    user: &BareJid,
    kind: &str,
    contact: &BareJid,
    mut pres: Element,
) {
    let uref = user_ref(user);
    stanza::set_attr(&mut pres, "to", user.as_str());
    match kind {
        "subscribe" => {
            if !cx.store().user_exists(&uref).await.unwrap_or(false) {
                route_presence(cx, "unsubscribed", user, contact);
                return;
            }
            let mut item = item_or_new(cx, user, contact).await;
            if matches!(item.subscription, Subscription::From | Subscription::Both) {
                route_presence(cx, "subscribed", user, contact);
            } else if item.approved {
                item.approved = false;
                item.subscription = match item.subscription {
                    Subscription::To => Subscription::Both,
                    _ => Subscription::From,
                };
                save_and_push(cx, user, &item).await;
                route_presence(cx, "subscribed", user, contact);
                cx.send_all(available_presences(cx, user, contact.as_str()));
            } else {
                let pres = subscription_request(&pres);
                let pending = cx.store().pending_subscriptions(&uref).await;
                if pending.is_ok_and(|p| p.len() >= MAX_PENDING_SUBSCRIPTIONS) {
                    tracing::info!(user = %user, "too many pending subscription requests: dropped");
                    return;
                }
                let mut xml = Vec::new();
                xmppd_stream::serialize(&pres, "", &mut xml);
                let xml = String::from_utf8_lossy(&xml);
                if let Err(e) = cx
                    .store()
                    .add_pending_subscription(&uref, contact.as_str(), &xml)
                    .await
                {
                    tracing::error!(error = %e, "storing subscription request failed");
                }
                to_available(cx, user, &pres);
            }
        }
        "subscribed" => {
            let mut item = item_or_new(cx, user, contact).await;
            if item.ask && matches!(item.subscription, Subscription::None | Subscription::From) {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::From => Subscription::Both,
                    _ => Subscription::To,
                };
                save_and_push(cx, user, &item).await;
                to_available(cx, user, &pres);
            }
        }
        "unsubscribe" => {
            let _ = cx
                .store()
                .remove_pending_subscription(&uref, contact.as_str())
                .await;
            let mut item = item_or_new(cx, user, contact).await;
            if matches!(item.subscription, Subscription::From | Subscription::Both) {
                item.subscription = match item.subscription {
                    Subscription::Both => Subscription::To,
                    _ => Subscription::None,
                };
                save_and_push(cx, user, &item).await;
                to_available(cx, user, &pres);
                cx.send_all(unavailable_presences(cx, user, contact.as_str()));
            }
        }
        "unsubscribed" => {
            let mut item = item_or_new(cx, user, contact).await;
            if item.ask || matches!(item.subscription, Subscription::To | Subscription::Both) {
                item.ask = false;
                item.subscription = match item.subscription {
                    Subscription::Both => Subscription::From,
                    Subscription::From => Subscription::From,
                    _ => Subscription::None,
                };
                save_and_push(cx, user, &item).await;
                to_available(cx, user, &pres);
            }
        }
        _ => {}
    }
}

/// `jabber:iq:roster` get/set from the account's own session (RFC 6121 §2).
pub(crate) async fn roster_iq(
    cx: &mut Context<'_>,
    session: &ClientSession,
    iq: &Element,
    kind: IqKind,
    query: Element,
) {
    let user = session.jid.to_bare();
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
                Err(e) => {
                    tracing::error!(error = %e, "roster read failed");
                    Err(StanzaError::new(Condition::InternalServerError))
                }
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
        .and_then(|j| Jid::new(j).ok())
        .ok_or_else(|| StanzaError::new(Condition::BadRequest))?
        .to_bare();
    let uref = user_ref(user);
    let internal = |e: xmppd_storage::StorageError| {
        tracing::error!(error = %e, "roster write failed");
        StanzaError::new(Condition::InternalServerError)
    };
    if el.attr("subscription") == Some("remove") {
        let Some(item) = cx
            .store()
            .roster_item(&uref, contact.as_str())
            .await
            .map_err(internal)?
        else {
            return Err(StanzaError::new(Condition::ItemNotFound));
        };
        // §2.5.2: cancel both directions before forgetting the contact.
        if item.ask || matches!(item.subscription, Subscription::To | Subscription::Both) {
            route_presence(cx, "unsubscribe", user, &contact);
        }
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            route_presence(cx, "unsubscribed", user, &contact);
            cx.send_all(unavailable_presences(cx, user, contact.as_str()));
        }
        let _ = cx
            .store()
            .remove_pending_subscription(&uref, contact.as_str())
            .await;
        (cx.store().remove_roster_item(&uref, contact.as_str()).await).map_err(internal)?;
        let (ver, items) = roster_with_version(cx, user).await.map_err(internal)?;
        // A contact that a shared group still provides stays, as the merged item.
        match items.iter().find(|i| i.jid == contact.as_str()) {
            Some(left) => push(cx, user, item_element(left, false), &ver),
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
    if roster_full_for(cx, user, contact.as_str()).await {
        return Err(StanzaError::with_text(
            Condition::ResourceConstraint,
            "roster full",
        ));
    }
    let mut item = item_or_new(cx, user, &contact).await;
    item.name = name;
    item.groups = groups;
    save_and_push(cx, user, &item).await;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(jid: &str, available: bool, priority: i8) -> Resource {
        let (queue, _rx) = crate::SessionQueue::new(crate::QueueLimits::default());
        Resource {
            available,
            priority,
            ..Resource::new(FullJid::new(jid).unwrap(), 0, queue)
        }
    }

    fn names(v: Vec<FullJid>) -> Vec<String> {
        let mut v: Vec<String> = v.iter().map(|j| j.resource().as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn highest_priority_wins_ties_go_to_all_negative_gets_none() {
        let rs = vec![
            res("u@x/a", true, 5),
            res("u@x/b", true, 5),
            res("u@x/c", true, 1),
            res("u@x/d", false, 9),
            res("u@x/e", true, -1),
        ];
        assert_eq!(names(message_targets(&rs, "chat")), ["a", "b"]);
        assert_eq!(names(message_targets(&rs, "normal")), ["a", "b"]);
        assert_eq!(names(message_targets(&rs, "headline")), ["a", "b", "c"]);
        assert!(message_targets(&rs, "groupchat").is_empty());
        assert!(message_targets(&[res("u@x/e", true, -1)], "chat").is_empty());
    }

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
