//! Message retraction (XEP-0424) in the archive: which archived message a retraction names, and
//! the tombstone (XEP-0424 §4) that takes its place. Pure functions over elements; the module
//! finds the rows and the store rewrites them.
//!
//! XEP-0424 0.4 (`urn:xmpp:message-retract:1`): `<retract id=…/>` names the `id` attribute of
//! the retracted `<message/>` (§3, §6.1: the stanza id a room assigned, for groupchat, which
//! rooms handle). Earlier revisions named its XEP-0359 `<origin-id/>`, and clients usually set
//! both to the same value, so either matches. The older form (`urn:xmpp:message-retract:0`
//! inside a XEP-0422 `<apply-to id=ORIGIN-ID/>`) names the origin id.

use minidom::Element;
use xmppd_core::stanza;

use crate::query::NS_SID;

pub const NS_RETRACT: &str = "urn:xmpp:message-retract:1";
/// The first namespace, carried in a XEP-0422 fastening.
pub const NS_RETRACT_0: &str = "urn:xmpp:message-retract:0";
pub const NS_FASTEN: &str = "urn:xmpp:fasten:0";
/// XEP-0424 §4: the archive replaces retracted messages with tombstones.
pub const NS_RETRACT_TOMBSTONE: &str = "urn:xmpp:message-retract:1#tombstone";

/// Characters the serialiser may escape in an attribute value.
const ESCAPED: &[char] = &['&', '<', '>', '\'', '"', '\t', '\n', '\r'];

/// A retraction request a message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retraction {
    /// The id it names.
    pub target: String,
    /// Which namespace it came in; the tombstone answers in the same one.
    pub ns: &'static str,
    /// The retraction's own `id`, which a `:1` tombstone carries (XEP-0424 §4).
    pub id: Option<String>,
}

/// The retraction `msg` asks for, if any. Only one-to-one messages: a groupchat retraction is
/// the room's to apply, errors and headlines retract nothing.
pub fn parse(msg: &Element) -> Option<Retraction> {
    if msg.name() != "message"
        || matches!(
            msg.attr("type"),
            Some("groupchat") | Some("error") | Some("headline")
        )
    {
        return None;
    }
    let id = msg.attr("id").map(str::to_owned);
    let named = |target: Option<&str>, ns| {
        target.filter(|t| !t.is_empty()).map(|t| Retraction {
            target: t.to_owned(),
            ns,
            id: id.clone(),
        })
    };
    if let Some(r) = msg.get_child("retract", NS_RETRACT) {
        return named(r.attr("id"), NS_RETRACT);
    }
    msg.children()
        .filter(|c| c.is("apply-to", NS_FASTEN) && c.has_child("retract", NS_RETRACT_0))
        .find_map(|c| named(c.attr("id"), NS_RETRACT_0))
}

/// A part of `target` the stored XML holds verbatim whatever the escaping: the longest run of
/// characters the serialiser never escapes. Rows without it cannot be the message.
pub fn needle(target: &str) -> &str {
    target.split(ESCAPED).max_by_key(|s| s.len()).unwrap_or("")
}

fn origin_id(msg: &Element) -> Option<&Element> {
    msg.get_child("origin-id", NS_SID)
}

/// Whether the archived `msg` is already a tombstone.
pub fn is_tombstone(msg: &Element) -> bool {
    msg.has_child("retracted", NS_RETRACT) || msg.has_child("retracted", NS_RETRACT_0)
}

/// Whether the archived `stored` stanza is the message `r` names and not yet a tombstone.
pub fn names(r: &Retraction, stored: &str) -> bool {
    stored
        .parse::<Element>()
        .is_ok_and(|msg| names_message(r, &msg))
}

/// Whether `msg` is the message `r` names and not yet a tombstone.
pub fn names_message(r: &Retraction, msg: &Element) -> bool {
    if is_tombstone(msg) {
        return false;
    }
    let by_origin = origin_id(msg).and_then(|o| o.attr("id")) == Some(r.target.as_str());
    by_origin || (r.ns == NS_RETRACT && msg.attr("id") == Some(r.target.as_str()))
}

/// The tombstone of the archived `stored` stanza (XEP-0424 §4): the same `<message/>` with its
/// attributes, its body and every payload replaced by `<retracted by=… stamp=…/>`. The origin
/// id stays, so clients that matched on it still can: beside the `:1` element, inside the `:0`
/// one as that revision says. `None` when `stored` does not parse.
pub fn tombstone(stored: &str, r: &Retraction, by: &str, stamp_ms: i64) -> Option<Element> {
    let mut out: Element = stored.parse().ok()?;
    let origin = origin_id(&out).cloned();
    drop(out.take_nodes());
    let stamp = stanza::xep82_datetime(stamp_ms);
    let mut retracted = stanza::elem("retracted", r.ns, &[("by", by), ("stamp", &stamp)]);
    if r.ns == NS_RETRACT {
        if let Some(id) = &r.id {
            stanza::set_attr(&mut retracted, "id", id.as_str());
        }
        out.append_child(retracted);
        if let Some(o) = origin {
            out.append_child(o);
        }
    } else {
        if let Some(o) = origin {
            retracted.append_child(o);
        }
        out.append_child(retracted);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    fn xml(el: &Element) -> String {
        let mut out = Vec::new();
        xmppd_stream::serialize(el, "", &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn both_forms_are_read_and_groupchat_is_left_to_rooms() {
        let v1 = m("<message xmlns='jabber:client' type='chat' id='r1'>\
                    <retract xmlns='urn:xmpp:message-retract:1' id='orig'/>\
                    <body>/me retracted a message</body></message>");
        assert_eq!(
            parse(&v1),
            Some(Retraction {
                target: "orig".into(),
                ns: NS_RETRACT,
                id: Some("r1".into())
            })
        );
        let v0 = m("<message xmlns='jabber:client'>\
                    <apply-to xmlns='urn:xmpp:fasten:0' id='o0'>\
                    <retract xmlns='urn:xmpp:message-retract:0'/></apply-to></message>");
        assert_eq!(
            parse(&v0),
            Some(Retraction {
                target: "o0".into(),
                ns: NS_RETRACT_0,
                id: None
            })
        );
        for no in [
            "<message xmlns='jabber:client' type='groupchat'>\
             <retract xmlns='urn:xmpp:message-retract:1' id='x'/></message>",
            "<message xmlns='jabber:client' type='error'>\
             <retract xmlns='urn:xmpp:message-retract:1' id='x'/></message>",
            "<message xmlns='jabber:client'><retract xmlns='urn:xmpp:message-retract:1'/>\
             </message>",
            "<message xmlns='jabber:client'><apply-to xmlns='urn:xmpp:fasten:0' id='x'>\
             <reactions xmlns='urn:xmpp:reactions:0'/></apply-to></message>",
            "<message xmlns='jabber:client'><body>hi</body></message>",
        ] {
            assert_eq!(parse(&m(no)), None, "{no}");
        }
    }

    #[test]
    fn the_id_or_the_origin_id_names_a_message_once() {
        let stored = "<message xmlns='jabber:client' id='m&amp;1' type='chat'><body>hi</body>\
                      <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>";
        let v1 = |t: &str| Retraction {
            target: t.into(),
            ns: NS_RETRACT,
            id: None,
        };
        assert!(names(&v1("m&1"), stored));
        assert!(names(&v1("o1"), stored));
        assert!(!names(&v1("m"), stored));
        let v0 = |t: &str| Retraction {
            target: t.into(),
            ns: NS_RETRACT_0,
            id: None,
        };
        assert!(
            names(&v0("o1"), stored),
            "the first revision names the origin id"
        );
        assert!(!names(&v0("m&1"), stored));
        let t = tombstone(stored, &v1("o1"), "a@x", 0).unwrap();
        assert!(!names(&v1("o1"), &xml(&t)), "a tombstone stays one");
        assert_eq!(needle("mm&1"), "mm");
        assert_eq!(needle("ab'cdef"), "cdef");
        assert_eq!(needle(""), "");
    }

    #[test]
    fn a_tombstone_keeps_the_envelope_and_drops_the_content() {
        let stored = "<message xmlns='jabber:client' from='a@x/r' to='b@x' id='m1' type='chat'>\
                      <body>secret</body><encrypted xmlns='urn:xmpp:omemo:2'/>\
                      <origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>";
        let r = Retraction {
            target: "m1".into(),
            ns: NS_RETRACT,
            id: Some("r1".into()),
        };
        let t = tombstone(stored, &r, "a@x", 1_000).unwrap();
        for (k, v) in [
            ("from", "a@x/r"),
            ("to", "b@x"),
            ("id", "m1"),
            ("type", "chat"),
        ] {
            assert_eq!(t.attr(k), Some(v));
        }
        let kids: Vec<_> = t.children().map(|c| (c.name(), c.ns())).collect();
        assert_eq!(
            kids,
            [
                ("retracted", NS_RETRACT.to_owned()),
                ("origin-id", NS_SID.to_owned())
            ]
        );
        let gone = t.get_child("retracted", NS_RETRACT).unwrap();
        assert_eq!(gone.attr("id"), Some("r1"));
        assert_eq!(gone.attr("by"), Some("a@x"));
        assert_eq!(gone.attr("stamp"), Some("1970-01-01T00:00:01.000Z"));
        assert!(!xml(&t).contains("secret"));

        let r0 = Retraction {
            ns: NS_RETRACT_0,
            ..r
        };
        let t = tombstone(stored, &r0, "a@x", 1_000).unwrap();
        let gone = t.get_child("retracted", NS_RETRACT_0).unwrap();
        assert_eq!(gone.attr("id"), None);
        assert!(gone.has_child("origin-id", NS_SID));
        assert_eq!(t.children().count(), 1);
    }
}
