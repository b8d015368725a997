//! Which messages are carbon-copied (XEP-0280 §6.1) and what a copy looks like (§7, §8).
//! Pure functions over the message.

use minidom::Element;
use xmppd_core::stanza::{self, NS_CLIENT, NS_HINTS};

/// `urn:xmpp:carbons:2`.
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";
/// The feature that says copies follow §6.1's rules.
pub const NS_CARBONS_RULES: &str = "urn:xmpp:carbons:rules:0";
/// XEP-0297 forwarding.
pub const NS_FORWARD: &str = "urn:xmpp:forward:0";
const NS_MUC_USER: &str = "http://jabber.org/protocol/muc#user";
/// XEP-0249 direct invitations.
const NS_CONFERENCE: &str = "jabber:x:conference";
/// Payloads typically used in IM (§6.1): receipts (XEP-0184), chat states (XEP-0085) and chat
/// markers (XEP-0333).
const IM_PAYLOADS: &[&str] = &[
    "urn:xmpp:receipts",
    "http://jabber.org/protocol/chatstates",
    "urn:xmpp:chat-markers:0",
];

/// Which way a message goes, seen from the account whose other clients get the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// One of the account's clients sent it (a `<sent/>` copy, §8).
    Sent,
    /// The account received it (a `<received/>` copy, §7).
    Received,
}

impl Direction {
    fn wrapper(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// Whether `msg` is copied to the account's other carbons-enabled clients (XEP-0280 §6.1).
///
/// Never when the sender asked for none (`<private/>`, §9, or the XEP-0334 `<no-copy/>`
/// hint), never a groupchat message, never a private message a chat room relays from an
/// occupant (every client joined to the room gets its own). Otherwise: `chat`; `normal` (or
/// an unknown type, RFC 6121 §5.2.2) with a body; an invitation to a room, mediated or
/// direct; a receipt, chat state or chat marker; and errors: the server does not remember
/// which messages it copied, so an error is taken as answering one that was (§6.1 asks for
/// those), which copies an error to a message that was not (a `headline`'s, say).
pub fn eligible(msg: &Element, direction: Direction) -> bool {
    if msg.get_child("private", NS_CARBONS).is_some()
        || msg.get_child("no-copy", NS_HINTS).is_some()
    {
        return false;
    }
    let muc_user = msg.get_child("x", NS_MUC_USER);
    let invitation = muc_user.is_some_and(|x| x.get_child("invite", NS_MUC_USER).is_some())
        || msg.get_child("x", NS_CONFERENCE).is_some();
    match stanza::stanza_type(msg, "normal") {
        "groupchat" => false,
        _ if invitation => true,
        // §6.1: a room's private message from an occupant reaches every client joined with
        // that nick already; one the user sends to an occupant is copied like any chat.
        _ if direction == Direction::Received && muc_user.is_some() => false,
        "chat" | "error" => true,
        "headline" => false,
        _ => {
            msg.get_child("body", NS_CLIENT).is_some()
                || msg
                    .children()
                    .any(|c| IM_PAYLOADS.contains(&c.ns().as_str()))
        }
    }
}

/// XEP-0359 unique and stable stanza ids.
const NS_SID: &str = stanza::NS_SID;

/// Takes the `<stanza-id/>` of `by`'s archive off `msg`.
pub fn take_stanza_id(msg: &mut Element, by: &str) -> Option<Element> {
    let ours = |c: &Element| c.is("stanza-id", NS_SID) && c.attr("by") == Some(by);
    let taken = msg.children().find(|c| ours(c)).cloned();
    stanza::remove_children(msg, ours);
    taken
}

/// Removes every `<stanza-id/>` of `msg`: those of the recipient's archive are not the
/// sender's to see.
pub fn strip_stanza_ids(msg: &mut Element) {
    stanza::remove_children(msg, |c| c.is("stanza-id", NS_SID));
}

/// Whether `msg` carries, at its top level, what only a server writes for an account's own
/// clients: a `<received/>` or `<sent/>` copy.
pub fn claims_to_be_a_copy(msg: &Element) -> bool {
    msg.children()
        .any(|c| c.ns() == NS_CARBONS && matches!(c.name(), "received" | "sent"))
}

/// Removes what [`claims_to_be_a_copy`] finds. A copy comes from the account's bare JID and
/// is written by this server straight into its sessions' queues; one that reaches an account
/// from anyone else is forged (XEP-0280 §11), and a client trusting it would show words put
/// in another's mouth.
pub fn strip_claimed_copies(msg: &mut Element) -> bool {
    stanza::remove_children(msg, |c| {
        c.ns() == NS_CARBONS && matches!(c.name(), "received" | "sent")
    })
}

/// The copy of `msg` for the account's client `to` (§7, §8): from the account's bare JID
/// `account`, of the original's type, with the original message, as it is, forwarded
/// (XEP-0297) in a `<sent/>` or `<received/>`.
///
/// Built as an element rather than with xmpp-parsers' `Forwarded`: that holds a typed
/// message, which would reorder the original's children and drop the attributes it does not
/// model, and a copy must be the message the other side saw.
pub fn copy(msg: &Element, direction: Direction, account: &str, to: &str) -> Element {
    let mut attrs = vec![("from", account), ("to", to)];
    if let Some(kind) = msg.attr("type") {
        attrs.push(("type", kind));
    }
    let mut forwarded = stanza::elem("forwarded", NS_FORWARD, &[]);
    forwarded.append_child(msg.clone());
    let mut wrapper = stanza::elem(direction.wrapper(), NS_CARBONS, &[]);
    wrapper.append_child(forwarded);
    let mut out = stanza::elem("message", NS_CLIENT, &attrs);
    out.append_child(wrapper);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Received, Sent};

    fn m(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    const C: &str = "xmlns='jabber:client'";

    #[test]
    fn im_messages_are_copied() {
        for x in [
            format!("<message {C} type='chat'><body>hi</body></message>"),
            format!("<message {C} type='chat'><active xmlns='http://jabber.org/protocol/chatstates'/></message>"),
            format!("<message {C}><body>untyped is normal</body></message>"),
            format!("<message {C} type='normal'><body>normal with body</body></message>"),
            format!("<message {C} type='bogus'><body>unknown is normal</body></message>"),
            format!("<message {C}><received xmlns='urn:xmpp:receipts' id='1'/></message>"),
            format!("<message {C}><displayed xmlns='urn:xmpp:chat-markers:0' id='1'/></message>"),
            format!("<message {C} type='error'><error type='cancel'/></message>"),
        ] {
            assert!(eligible(&m(&x), Sent), "{x}");
            assert!(eligible(&m(&x), Received), "{x}");
        }
    }

    #[test]
    fn others_are_not() {
        for x in [
            format!("<message {C}/>"),
            format!("<message {C} type='normal'><subject>no body</subject></message>"),
            format!("<message {C} type='headline'><body>news</body></message>"),
            format!("<message {C} type='groupchat'><body>to the room</body></message>"),
            format!("<message {C} type='groupchat'><x xmlns='jabber:x:conference' jid='r@c'/></message>"),
        ] {
            assert!(!eligible(&m(&x), Sent), "{x}");
            assert!(!eligible(&m(&x), Received), "{x}");
        }
    }

    #[test]
    fn private_and_no_copy_are_honoured() {
        for hint in [
            "<private xmlns='urn:xmpp:carbons:2'/>",
            "<no-copy xmlns='urn:xmpp:hints'/>",
            "<private xmlns='urn:xmpp:carbons:2'/><no-copy xmlns='urn:xmpp:hints'/>",
        ] {
            let x = format!("<message {C} type='chat'><body>secret</body>{hint}</message>");
            assert!(!eligible(&m(&x), Sent), "{x}");
            assert!(!eligible(&m(&x), Received), "{x}");
        }
        // The same names in another namespace are no hint.
        let x =
            format!("<message {C} type='chat'><body>b</body><private xmlns='urn:x'/></message>");
        assert!(eligible(&m(&x), Sent));
    }

    #[test]
    fn room_private_messages_are_copied_when_sent_only() {
        let pm = format!(
            "<message {C} type='chat'><body>psst</body>\
             <x xmlns='http://jabber.org/protocol/muc#user'/></message>"
        );
        assert!(eligible(&m(&pm), Sent));
        assert!(!eligible(&m(&pm), Received));
    }

    #[test]
    fn room_invitations_are_copied() {
        let mediated = format!(
            "<message {C}><x xmlns='http://jabber.org/protocol/muc#user'>\
             <invite from='a@localhost/x'/></x></message>"
        );
        let direct = format!(
            "<message {C}><x xmlns='jabber:x:conference' jid='r@conference.localhost'/></message>"
        );
        for x in [mediated, direct] {
            assert!(eligible(&m(&x), Received), "{x}");
            assert!(eligible(&m(&x), Sent), "{x}");
        }
    }

    #[test]
    fn a_copy_forwards_the_message_as_it_is() {
        let original = m(&format!(
            "<message {C} from='b@localhost/x' to='a@localhost/pc' type='chat' xml:lang='en' \
             id='m1'><thread>t</thread><body>hi</body><stanza-id xmlns='urn:xmpp:sid:0' \
             by='a@localhost' id='s1'/></message>"
        ));
        let c = copy(&original, Received, "a@localhost", "a@localhost/phone");
        assert_eq!(c.attr("from"), Some("a@localhost"));
        assert_eq!(c.attr("to"), Some("a@localhost/phone"));
        assert_eq!(c.attr("type"), Some("chat"));
        let inner = c
            .get_child("received", NS_CARBONS)
            .and_then(|r| r.get_child("forwarded", NS_FORWARD))
            .and_then(|f| f.get_child("message", NS_CLIENT))
            .unwrap();
        assert_eq!(inner, &original);
        // xmpp-parsers reads it as a carbon.
        let r = xmpp_parsers::carbons::Received::try_from(
            c.get_child("received", NS_CARBONS).unwrap().clone(),
        );
        let r = r.map_err(|e| format!("{e:?}")).unwrap();
        let bodies: Vec<&String> = r.forwarded.message.bodies.values().collect();
        assert_eq!(bodies, ["hi"]);
        assert!(claims_to_be_a_copy(&c));
        let s = copy(&original, Sent, "a@localhost", "a@localhost/phone");
        assert!(s.get_child("sent", NS_CARBONS).is_some());
    }

    #[test]
    fn claimed_copies_are_stripped() {
        let mut forged = m(&format!(
            "<message {C} type='chat'><received xmlns='urn:xmpp:carbons:2'><forwarded \
             xmlns='urn:xmpp:forward:0'><message {C} type='chat'><body>lie</body></message>\
             </forwarded></received><sent xmlns='urn:xmpp:carbons:2'/><body>b</body></message>"
        ));
        assert!(claims_to_be_a_copy(&forged));
        assert!(strip_claimed_copies(&mut forged));
        assert!(!claims_to_be_a_copy(&forged));
        assert_eq!(forged.children().count(), 1);
    }
}
