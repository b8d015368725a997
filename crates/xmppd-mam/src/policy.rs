//! What goes into a user's archive: XEP-0313 §5.1.1 and the XEP-0334 hints, then the owner's
//! preferences (XEP-0313 §6, XEP-0441). Pure functions over the message.

use minidom::Element;
use xmppd_core::stanza;

use crate::store::{DefaultPolicy, Prefs};

/// Payloads a client syncs from the archive even without a body: OMEMO (version 2 often has
/// no body), OpenPGP for XMPP, corrections (XEP-0308), retractions (XEP-0424, its fastening
/// form too), reactions (XEP-0444).
const SYNCED: &[(&str, &str)] = &[
    ("encrypted", "eu.siacs.conversations.axolotl"),
    ("encrypted", "urn:xmpp:omemo:2"),
    ("openpgp", "urn:xmpp:openpgp:0"),
    ("replace", "urn:xmpp:message-correct:0"),
    ("retract", "urn:xmpp:message-retract:1"),
    ("apply-to", "urn:xmpp:fasten:0"),
    ("reactions", "urn:xmpp:reactions:0"),
];

/// Chat markers (XEP-0333), archived only when configured.
const NS_MARKERS: &str = "urn:xmpp:chat-markers:0";

/// Whether `msg` belongs in a user's archive by its content: `chat` and `normal` messages with
/// a body or a synced payload (markers too when `markers`), unless hinted `<no-store/>` or
/// `<no-permanent-store/>`; `<store/>` archives any `chat` or `normal` message. Errors,
/// headlines and groupchat messages (which live in the room's archive) never.
pub fn archivable(msg: &Element, markers: bool) -> bool {
    if msg.name() != "message"
        || matches!(
            msg.attr("type"),
            Some("error") | Some("headline") | Some("groupchat")
        )
    {
        return false;
    }
    worth_keeping(msg, markers)
}

/// Whether a message's content belongs in an archive, whatever its type (a room's archive
/// asks this of its groupchat messages): a body or a synced payload (markers too when
/// `markers`), or a `<store/>` hint, unless hinted `<no-store/>` or `<no-permanent-store/>`
/// (XEP-0334 §4); chat states alone never.
pub fn worth_keeping(msg: &Element, markers: bool) -> bool {
    let hint = |name: &str| msg.get_child(name, stanza::NS_HINTS).is_some();
    if hint("no-store") || hint("no-permanent-store") {
        return false;
    }
    if hint("store") || body(msg).is_some() {
        return true;
    }
    msg.children()
        .any(|c| SYNCED.iter().any(|(n, ns)| c.is(*n, *ns)) || (markers && c.ns() == NS_MARKERS))
}

/// The text of the message's body, if it has one (what full-text search looks at).
pub fn body(msg: &Element) -> Option<String> {
    msg.get_child("body", stanza::NS_CLIENT).map(|b| b.text())
}

/// What the preferences say about a conversation with `with_bare`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Archive,
    Skip,
    /// Archive if `with_bare` is in the owner's roster.
    IfInRoster,
}

/// XEP-0441 §4: the `never` list wins over the `always` list, which wins over the default.
pub fn verdict(prefs: &Prefs, with_bare: &str) -> Verdict {
    if prefs.never.iter().any(|j| j == with_bare) {
        return Verdict::Skip;
    }
    if prefs.always.iter().any(|j| j == with_bare) {
        return Verdict::Archive;
    }
    match prefs.default {
        DefaultPolicy::Always => Verdict::Archive,
        DefaultPolicy::Never => Verdict::Skip,
        DefaultPolicy::Roster => Verdict::IfInRoster,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(xml: &str) -> Element {
        xml.parse().unwrap()
    }

    #[test]
    fn what_is_archived() {
        let yes = [
            "<message xmlns='jabber:client' type='chat'><body>hi</body></message>",
            "<message xmlns='jabber:client'><body>untyped is normal</body></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <encrypted xmlns='urn:xmpp:omemo:2'/></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <encrypted xmlns='eu.siacs.conversations.axolotl'/></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <replace xmlns='urn:xmpp:message-correct:0' id='x'/><body>fixed</body></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <retract xmlns='urn:xmpp:message-retract:1' id='x'/></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <reactions xmlns='urn:xmpp:reactions:0' id='x'><reaction>👍</reaction></reactions>\
             </message>",
            "<message xmlns='jabber:client' type='chat'><store xmlns='urn:xmpp:hints'/>\
             <active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        ];
        for x in yes {
            assert!(archivable(&m(x), false), "{x}");
        }
        let no = [
            "<message xmlns='jabber:client' type='error'><body>hi</body></message>",
            "<message xmlns='jabber:client' type='headline'><body>news</body></message>",
            "<message xmlns='jabber:client' type='groupchat'><body>room</body></message>",
            "<message xmlns='jabber:client' type='chat'><body>secret</body>\
             <no-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'><body>x</body>\
             <no-permanent-store xmlns='urn:xmpp:hints'/></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
            "<message xmlns='jabber:client' type='chat'>\
             <displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>",
        ];
        for x in no {
            assert!(!archivable(&m(x), false), "{x}");
        }
        let marker = "<message xmlns='jabber:client' type='chat'>\
                      <displayed xmlns='urn:xmpp:chat-markers:0' id='x'/></message>";
        assert!(archivable(&m(marker), true));
    }

    #[test]
    fn preferences_never_beats_always_beats_default() {
        let p = Prefs {
            default: DefaultPolicy::Roster,
            always: vec!["a@x".into(), "both@x".into()],
            never: vec!["n@x".into(), "both@x".into()],
        };
        assert_eq!(verdict(&p, "a@x"), Verdict::Archive);
        assert_eq!(verdict(&p, "n@x"), Verdict::Skip);
        assert_eq!(verdict(&p, "both@x"), Verdict::Skip);
        assert_eq!(verdict(&p, "other@x"), Verdict::IfInRoster);
        let always = Prefs::with_default(DefaultPolicy::Always);
        assert_eq!(verdict(&always, "other@x"), Verdict::Archive);
        let never = Prefs::with_default(DefaultPolicy::Never);
        assert_eq!(verdict(&never, "other@x"), Verdict::Skip);
    }
}
