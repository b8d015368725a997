//! What an inactive client gets at once, and what may wait for it to be active again
//! (XEP-0352 §3.2 leaves the choice to the server). Pure functions over the stanza.

use std::collections::HashMap;

use jid::BareJid;
use minidom::Element;
use xmppd_core::address::Bare;
use xmppd_core::stanza::{self, NS_CLIENT};

const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
const NS_CARBONS: &str = "urn:xmpp:carbons:2";
const NS_FORWARD: &str = "urn:xmpp:forward:0";
/// XEP-0353 call invitations and their follow-ups (a call withdrawn must not wait either).
const NS_JINGLE_MESSAGE: &str = "urn:xmpp:jingle-message:0";

/// What to do with one stanza for an inactive session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Urgency {
    /// Send it now (after what was held, to keep the order).
    Now,
    /// Presence from this address: only the latest matters to the client.
    LatestPresence(String),
    /// Hold it, in order, with the rest.
    Later,
}

/// The rooms a session has joined and its nick in each (from the room's self-presence,
/// XEP-0045 §7.2.3, status 110), for telling a mention from the rest of a room's talk.
pub type Nicks = HashMap<BareJid, String>;

/// The room and nick a self-presence (status 110) names, and whether it is an unavailable
/// one (the session left, or its nick changed).
pub fn self_presence(pres: &Element) -> Option<(BareJid, String, bool)> {
    if pres.name() != "presence" {
        return None;
    }
    let x = pres.get_child("x", NS_MUC_USER)?;
    let is_self = x
        .children()
        .any(|c| c.is("status", NS_MUC_USER) && c.attr("code") == Some("110"));
    if !is_self {
        return None;
    }
    let from = jid::FullJid::new(pres.attr("from")?).ok()?;
    let leaving = pres.attr("type") == Some("unavailable");
    Some((from.bare(), from.resource().to_string(), leaving))
}

/// How urgent `stanza` is for a session joined to the rooms in `nicks`.
///
/// At once: every IQ (someone waits for the answer); presence other than availability
/// (errors, subscription requests and answers, the session's own presence in a room, which
/// answers its join); a message with a body, except a room's talk; a room message that
/// mentions the session's nick or is the session's own, echoed; encrypted messages (OMEMO,
/// OpenPGP: their body is often only a fallback); call invitations (XEP-0353); invitations to
/// rooms; errors; archive results (the answer to the session's query). A copy (XEP-0280) is
/// as urgent as the message it carries. Availability waits, the latest per sender; the rest
/// (chat states, receipts and markers without a body, a room's talk, pubsub notifications)
/// waits in order.
pub fn urgency(stanza: &Element, nicks: &Nicks) -> Urgency {
    match stanza.name() {
        "presence" => match (stanza.attr("type"), stanza.attr("from")) {
            (None | Some("unavailable"), Some(from)) if self_presence(stanza).is_none() => {
                Urgency::LatestPresence(from.to_owned())
            }
            _ => Urgency::Now,
        },
        "message" => message_urgency(stanza, nicks),
        _ => Urgency::Now,
    }
}

fn message_urgency(msg: &Element, nicks: &Nicks) -> Urgency {
    if let Some(inner) = carried(msg) {
        return message_urgency(inner, nicks);
    }
    let kind = stanza::stanza_type(msg, "normal");
    let body = msg.get_child("body", NS_CLIENT).map(Element::text);
    let urgent_payload = msg.children().any(|c| {
        let ns = c.ns();
        (c.name() == "encrypted"
            && (ns == "eu.siacs.conversations.axolotl" || ns.starts_with("urn:xmpp:omemo:")))
            || ns == "urn:xmpp:openpgp:0"
            || ns == NS_JINGLE_MESSAGE
            || (c.name() == "result" && ns.starts_with("urn:xmpp:mam:"))
            || ns == "jabber:x:conference"
            || (c.is("x", NS_MUC_USER) && c.get_child("invite", NS_MUC_USER).is_some())
    });
    let urgent = match kind {
        "error" => true,
        "groupchat" => mentioned(msg, body.as_deref(), nicks),
        _ => body.is_some(),
    };
    if urgent || urgent_payload {
        Urgency::Now
    } else {
        Urgency::Later
    }
}

/// The message a carbon copy carries.
fn carried(msg: &Element) -> Option<&Element> {
    msg.children()
        .find(|c| c.ns() == NS_CARBONS && matches!(c.name(), "received" | "sent"))?
        .get_child("forwarded", NS_FORWARD)?
        .get_child("message", NS_CLIENT)
}

/// Whether a room message speaks to the session: its nick in the body (case aside), or the
/// session's own message echoed back by the room.
fn mentioned(msg: &Element, body: Option<&str>, nicks: &Nicks) -> bool {
    let Some(from) = msg.attr("from").and_then(|f| jid::Jid::new(f).ok()) else {
        return false;
    };
    let Some(nick) = nicks.get(&from.bare()) else {
        return false;
    };
    if from.resource().is_some_and(|r| r.as_str() == nick) {
        return true;
    }
    body.is_some_and(|b| b.to_lowercase().contains(&nick.to_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "xmlns='jabber:client'";

    fn el(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn in_room() -> Nicks {
        let mut n = Nicks::new();
        n.insert(
            BareJid::new("room@conference.localhost").unwrap(),
            "Alice".into(),
        );
        n
    }

    fn of(xml: String) -> Urgency {
        urgency(&el(&xml), &in_room())
    }

    #[test]
    fn what_passes_at_once() {
        for x in [
            format!("<iq {C} type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>"),
            format!("<iq {C} type='result' id='1'/>"),
            format!("<message {C} type='chat'><body>hi</body></message>"),
            format!("<message {C}><body>normal</body></message>"),
            format!("<message {C} type='error'/>"),
            format!("<message {C} type='chat'><encrypted xmlns='eu.siacs.conversations.axolotl'/></message>"),
            format!("<message {C} type='chat'><encrypted xmlns='urn:xmpp:omemo:2'/></message>"),
            format!("<message {C}><propose xmlns='urn:xmpp:jingle-message:0' id='c'/></message>"),
            format!("<message {C} from='room@conference.localhost/Bob' type='groupchat'><body>hey alice!</body></message>"),
            format!("<message {C} from='room@conference.localhost/Alice' type='groupchat'><body>mine</body></message>"),
            format!("<message {C}><x xmlns='jabber:x:conference' jid='r@c'/></message>"),
            format!("<message {C}><result xmlns='urn:xmpp:mam:2' id='1'/></message>"),
            format!("<message {C} from='a@localhost'><received xmlns='urn:xmpp:carbons:2'><forwarded \
                     xmlns='urn:xmpp:forward:0'><message {C} type='chat'><body>copied</body>\
                     </message></forwarded></received></message>"),
            format!("<presence {C} from='b@localhost' type='subscribe'/>"),
            format!("<presence {C} from='b@localhost/x' type='error'/>"),
            format!("<presence {C} from='room@conference.localhost/Alice'><x xmlns='{NS_MUC_USER}'>\
                     <status code='110'/></x></presence>"),
        ] {
            assert_eq!(of(x.clone()), Urgency::Now, "{x}");
        }
    }

    #[test]
    fn what_waits() {
        for x in [
            format!("<message {C} type='chat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            format!("<message {C}><received xmlns='urn:xmpp:receipts' id='1'/></message>"),
            format!("<message {C} from='room@conference.localhost/Bob' type='groupchat'><body>chatter</body></message>"),
            format!("<message {C} from='other@conference.localhost/Bob' type='groupchat'><body>alice</body></message>"),
            format!("<message {C} from='a@localhost'><sent xmlns='urn:xmpp:carbons:2'><forwarded \
                     xmlns='urn:xmpp:forward:0'><message {C} type='chat'><active \
                     xmlns='http://jabber.org/protocol/chatstates'/></message></forwarded></sent></message>"),
        ] {
            assert_eq!(of(x.clone()), Urgency::Later, "{x}");
        }
        assert_eq!(
            of(format!(
                "<presence {C} from='b@localhost/x'><show>away</show></presence>"
            )),
            Urgency::LatestPresence("b@localhost/x".into())
        );
        assert_eq!(
            of(format!(
                "<presence {C} from='b@localhost/x' type='unavailable'/>"
            )),
            Urgency::LatestPresence("b@localhost/x".into())
        );
    }

    #[test]
    fn a_self_presence_names_the_room_and_nick() {
        let join = el(&format!(
            "<presence {C} from='room@conference.localhost/Al'><x xmlns='{NS_MUC_USER}'>\
             <status code='110'/></x></presence>"
        ));
        let (room, nick, leaving) = self_presence(&join).unwrap();
        assert_eq!(
            (room.as_str(), nick.as_str(), leaving),
            ("room@conference.localhost", "Al", false)
        );
        let other = el(&format!(
            "<presence {C} from='room@conference.localhost/Bob'><x xmlns='{NS_MUC_USER}'/></presence>"
        ));
        assert!(self_presence(&other).is_none());
    }
}
