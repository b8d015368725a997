//! One account in the XEP-0227 form and in xmppd's: the conversions both ways, pure.
//!
//! A `<user/>` carries (XEP-0227 §4): the name, either a `password` attribute or
//! `<scram-credentials xmlns='urn:xmpp:pie:0#scram'/>` per mechanism (§4.1: `iter-count`,
//! `salt`, `server-key`, `stored-key`, base64), the roster (`jabber:iq:roster` query, with
//! pending inbound requests as `<presence type='subscribe'/>` children of the user), the
//! vCard (`vcard-temp`), private XML (`jabber:iq:private` query), and offline messages
//! (`<offline-messages/>`). What xmppd does not take from the format (PEP nodes, archives,
//! privacy lists) is counted by kind and reported.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use minidom::Element;
use xmpp_parsers::delay::Delay;
use xmpp_parsers::roster::{Ask, Group, Item, Subscription as ParsedSubscription};
use xmpp_parsers::vcard::VCard;
use xmppd_core::stanza::{elem, set_attr, text_elem};
use xmppd_sasl::HashAlg;
use xmppd_storage::{RosterItem, StoredScram, Subscription, UserRef};

use crate::reader::{NS_PIE, NS_PIE_OLD};

pub const NS_SCRAM: &str = "urn:xmpp:pie:0#scram";
pub const NS_ROSTER: &str = "jabber:iq:roster";
pub const NS_VCARD: &str = "vcard-temp";
pub const NS_PRIVATE: &str = "jabber:iq:private";
pub const NS_CLIENT: &str = "jabber:client";
const NS_DELAY: &str = "urn:xmpp:delay";

/// How an account proves its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A password in the clear: turned into SCRAM keys when stored, never kept.
    Password(String),
    /// Salted keys, one per hash function.
    Scram(Vec<StoredScram>),
}

/// One account and what is stored for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: UserRef,
    pub secret: Secret,
    pub roster: Vec<RosterItem>,
    /// Inbound subscription requests waiting for an answer: (contact, `<presence/>` XML).
    pub pending: Vec<(String, String)>,
    pub vcard: Option<String>,
    /// (namespace, element XML), one per namespace.
    pub private: Vec<(String, String)>,
    /// (when it was stored, Unix ms, or `None` if unknown; `<message/>` XML).
    pub offline: Vec<(Option<i64>, String)>,
    /// What was not taken, by kind, with a count.
    pub skipped: BTreeMap<String, usize>,
}

fn serialize(el: &Element) -> String {
    let mut xml = Vec::new();
    xmppd_stream::serialize(el, "", &mut xml);
    String::from_utf8_lossy(&xml).into_owned()
}

fn is(el: &Element, name: &str, ns: &str) -> bool {
    el.name() == name && el.ns() == ns
}

/// Reads a `<user/>` of host `domain` (already checked and normalised).
pub fn parse_user(domain: &str, el: &Element) -> Result<Account, String> {
    let name = el.attr("name").ok_or("<user/> without 'name'")?;
    let node = jid::NodePart::new(name).map_err(|e| format!("user name {name:?}: {e}"))?;
    let user = UserRef::new(node.as_str(), domain);
    let on = |e: String| format!("user {name:?}: {e}");
    let mut scram = Vec::new();
    let mut account = Account {
        user,
        secret: Secret::Scram(Vec::new()),
        roster: Vec::new(),
        pending: Vec::new(),
        vcard: None,
        private: Vec::new(),
        offline: Vec::new(),
        skipped: BTreeMap::new(),
    };
    let mut skipped: BTreeMap<String, usize> = BTreeMap::new();
    for child in el.children() {
        if is(child, "scram-credentials", NS_SCRAM) {
            match parse_scram(child).map_err(on)? {
                Some(creds) => scram.push(creds),
                None => {
                    let mech = child.attr("mechanism").unwrap_or("(none)");
                    *skipped
                        .entry(format!("SCRAM credentials {mech}"))
                        .or_default() += 1;
                }
            }
        } else if is(child, "query", NS_ROSTER) {
            for item in child.children() {
                account
                    .roster
                    .push(parse_roster_item(item).map_err(|e| on(format!("roster: {e}")))?);
            }
        } else if is(child, "presence", NS_CLIENT) && child.attr("type") == Some("subscribe") {
            let from = (child.attr("from").map(jid::BareJid::new))
                .ok_or_else(|| on("subscription request without 'from'".into()))?
                .map_err(|e| on(format!("subscription request: 'from': {e}")))?;
            account.pending.push((from.to_string(), serialize(child)));
        } else if is(child, "vCard", NS_VCARD) {
            VCard::try_from(child.clone()).map_err(|e| on(format!("vCard: {e}")))?;
            account.vcard = Some(serialize(child));
        } else if is(child, "query", NS_PRIVATE) {
            for stored in child.children() {
                account
                    .private
                    .push((stored.ns().to_string(), serialize(stored)));
            }
        } else if child.name() == "offline-messages"
            && (child.ns() == NS_PIE || child.ns() == NS_PIE_OLD)
        {
            for msg in child.children() {
                account
                    .offline
                    .push(parse_offline(msg).map_err(|e| on(format!("offline message: {e}")))?);
            }
        } else {
            let (kind, n) = unsupported(child);
            *skipped.entry(kind).or_default() += n;
        }
    }
    account.secret = match el.attr("password") {
        // Keys say more than a password would: they are kept as they are.
        _ if !scram.is_empty() => Secret::Scram(scram),
        Some(p) if !p.is_empty() => Secret::Password(p.to_owned()),
        _ => return Err(on("neither a password nor SCRAM credentials".into())),
    };
    account.skipped = skipped;
    Ok(account)
}

/// What a child xmppd does not import is, for the report.
fn unsupported(child: &Element) -> (String, usize) {
    const PUBSUB: &str = "http://jabber.org/protocol/pubsub";
    const PUBSUB_OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
    if is(child, "pubsub", PUBSUB) {
        ("PEP nodes' items".into(), child.children().count())
    } else if is(child, "pubsub", PUBSUB_OWNER) {
        ("PEP nodes' configurations".into(), child.children().count())
    } else if is(child, "archive", "urn:xmpp:pie:0#mam") {
        ("archived messages".into(), child.children().count())
    } else {
        (format!("<{} xmlns='{}'>", child.name(), child.ns()), 1)
    }
}

/// One `<scram-credentials/>`; `None` for a mechanism xmppd has no keys for.
fn parse_scram(el: &Element) -> Result<Option<StoredScram>, String> {
    let mech = el
        .attr("mechanism")
        .ok_or("scram-credentials without 'mechanism'")?;
    let Some(alg) = mech.strip_prefix("SCRAM-").and_then(HashAlg::parse) else {
        return Ok(None);
    };
    let text = |name: &str| -> Result<String, String> {
        let child = el
            .children()
            .find(|c| c.name() == name)
            .ok_or_else(|| format!("{mech}: no <{name}/>"))?;
        Ok(child.text().trim().to_owned())
    };
    let iterations: u32 = (text("iter-count")?.parse().ok())
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("{mech}: <iter-count/> is not a positive number"))?;
    let decode = |name: &str| -> Result<Vec<u8>, String> {
        B64.decode(text(name)?)
            .map_err(|e| format!("{mech}: <{name}/> is not base64: {e}"))
    };
    let (mut salt, mut server_key, mut stored_key) = (
        decode("salt")?,
        decode("server-key")?,
        decode("stored-key")?,
    );
    let len = alg.output_len();
    // Some servers base64-encode values that were base64 already (ejabberd does): the keys'
    // length tells, since a key is exactly one digest long.
    let twice = |v: &[u8]| B64.decode(v).ok();
    if server_key.len() != len || stored_key.len() != len {
        match (twice(&salt), twice(&server_key), twice(&stored_key)) {
            (Some(s), Some(sk), Some(st)) if sk.len() == len && st.len() == len => {
                (salt, server_key, stored_key) = (s, sk, st);
            }
            _ => {
                return Err(format!(
                    "{mech}: the keys are not {len} bytes long (the digest size)"
                ))
            }
        }
    }
    if salt.is_empty() {
        return Err(format!("{mech}: empty <salt/>"));
    }
    Ok(Some(StoredScram {
        hash: alg.as_str().to_owned(),
        salt,
        iterations,
        stored_key,
        server_key,
    }))
}

fn parse_roster_item(el: &Element) -> Result<RosterItem, String> {
    let jid = el.attr("jid").unwrap_or("(none)").to_owned();
    let item = Item::try_from(el.clone()).map_err(|e| format!("item {jid:?}: {e}"))?;
    let subscription = match item.subscription {
        ParsedSubscription::None => Subscription::None,
        ParsedSubscription::From => Subscription::From,
        ParsedSubscription::To => Subscription::To,
        ParsedSubscription::Both => Subscription::Both,
        ParsedSubscription::Remove => {
            return Err(format!(
                "item {jid:?}: subscription 'remove' is not a state"
            ))
        }
    };
    Ok(RosterItem {
        jid: item.jid.to_string(),
        name: item.name.filter(|n| !n.is_empty()),
        subscription,
        ask: item.ask == Ask::Subscribe,
        approved: item.approved.unwrap_or(false),
        groups: item.groups.into_iter().map(|g| g.0).collect(),
    })
}

fn parse_offline(el: &Element) -> Result<(Option<i64>, String), String> {
    if el.name() != "message" {
        return Err(format!("<{}/> is not a <message/>", el.name()));
    }
    // XEP-0203: the delay the storing server added says when it was stored.
    let stamp = (el.children())
        .filter(|c| is(c, "delay", NS_DELAY))
        .find_map(|c| Delay::try_from(c.clone()).ok())
        .map(|d| d.stamp.0.timestamp_millis());
    Ok((stamp, serialize(el)))
}

/// The `<user/>` of `account`, as [`parse_user`] reads it.
pub fn user_element(account: &Account) -> Result<Element, String> {
    let mut user = elem("user", NS_PIE, &[("name", &account.user.user)]);
    match &account.secret {
        Secret::Password(p) => set_attr(&mut user, "password", p.as_str()),
        Secret::Scram(keys) => {
            for k in keys {
                let mut creds = elem(
                    "scram-credentials",
                    NS_SCRAM,
                    &[("mechanism", &format!("SCRAM-{}", k.hash))],
                );
                let iterations = k.iterations.to_string();
                for (name, value) in [
                    ("iter-count", iterations),
                    ("salt", B64.encode(&k.salt)),
                    ("server-key", B64.encode(&k.server_key)),
                    ("stored-key", B64.encode(&k.stored_key)),
                ] {
                    creds.append_child(text_elem(name, NS_SCRAM, &value));
                }
                user.append_child(creds);
            }
        }
    }
    let parse = |what: &str, xml: &str| {
        xml.parse::<Element>().map_err(|e| {
            format!(
                "user {:?}: stored {what} does not parse: {e}",
                account.user.user
            )
        })
    };
    if !account.roster.is_empty() {
        let mut query = Element::bare("query", NS_ROSTER);
        for item in &account.roster {
            let jid =
                jid::BareJid::new(&item.jid).map_err(|e| format!("roster {}: {e}", item.jid))?;
            let item = Item {
                jid,
                name: item.name.clone(),
                subscription: match item.subscription {
                    Subscription::None => ParsedSubscription::None,
                    Subscription::From => ParsedSubscription::From,
                    Subscription::To => ParsedSubscription::To,
                    Subscription::Both => ParsedSubscription::Both,
                },
                ask: if item.ask { Ask::Subscribe } else { Ask::None },
                groups: item.groups.iter().cloned().map(Group).collect(),
                approved: item.approved.then_some(true),
            };
            query.append_child(Element::from(item));
        }
        user.append_child(query);
    }
    for (_, xml) in &account.pending {
        user.append_child(parse("subscription request", xml)?);
    }
    if let Some(xml) = &account.vcard {
        user.append_child(parse("vCard", xml)?);
    }
    if !account.private.is_empty() {
        let mut query = Element::bare("query", NS_PRIVATE);
        for (_, xml) in &account.private {
            query.append_child(parse("private XML", xml)?);
        }
        user.append_child(query);
    }
    if !account.offline.is_empty() {
        let mut messages = Element::bare("offline-messages", NS_PIE);
        for (_, xml) in &account.offline {
            messages.append_child(parse("offline message", xml)?);
        }
        user.append_child(messages);
    }
    Ok(user)
}
