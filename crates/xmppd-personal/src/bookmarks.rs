//! Bookmarks in their two forms (XEP-0402 §5.3): one `urn:xmpp:bookmarks:1` item per room,
//! its id the room's JID, and the legacy XEP-0048 `<storage xmlns='storage:bookmarks'/>`
//! that holds them all (in private XML storage, or as the item of a `storage:bookmarks`
//! node). Pure conversions between them.

use jid::BareJid;
use minidom::Element;
use xmpp_parsers::bookmarks::{Conference as LegacyConference, Storage, Url};
use xmpp_parsers::bookmarks2::Conference;

/// The XEP-0402 node.
pub const NODE: &str = xmpp_parsers::ns::BOOKMARKS2;
/// The legacy namespace: of the private XML element, and of the XEP-0048 §3.2 node.
pub const LEGACY: &str = xmpp_parsers::ns::BOOKMARKS;

/// XEP-0402 §3: what the node must be (XEP-0223 private storage, every bookmark kept, none
/// sent at login).
pub const NODE_OPTIONS: &[(&str, &str)] = &[
    ("pubsub#persist_items", "true"),
    ("pubsub#access_model", "whitelist"),
    ("pubsub#max_items", "max"),
    ("pubsub#send_last_published_item", "never"),
];

/// One room's bookmark.
#[derive(Debug, Clone)]
pub struct Bookmark {
    pub room: BareJid,
    pub conference: Conference,
}

/// The bookmarks of a legacy storage, one per room (the last one written for a room wins).
pub fn from_legacy(storage: &Storage) -> Vec<Bookmark> {
    let mut out: Vec<Bookmark> = Vec::new();
    for c in &storage.conferences {
        let (room, conference) = c.clone().into_bookmarks2();
        out.retain(|b| b.room != room);
        out.push(Bookmark { room, conference });
    }
    out
}

/// The legacy storage of `bookmarks`, with the `urls` it had (XEP-0402 has none).
pub fn to_legacy(bookmarks: &[Bookmark], urls: Vec<Url>) -> Storage {
    let conferences = (bookmarks.iter())
        .map(|b| LegacyConference {
            autojoin: b.conference.autojoin,
            jid: b.room.clone(),
            name: b.conference.name.clone(),
            nick: b.conference.nick.clone(),
            password: b.conference.password.clone(),
        })
        .collect();
    Storage { conferences, urls }
}

/// The bookmarks of the items of the XEP-0402 node; items that are not a room's bookmark are
/// left out.
pub fn from_items(items: &[(String, Element)]) -> Vec<Bookmark> {
    let mut out: Vec<Bookmark> = Vec::new();
    for (id, payload) in items {
        let (Ok(room), Ok(conference)) = (BareJid::new(id), Conference::try_from(payload.clone()))
        else {
            continue;
        };
        if out.iter().all(|b| b.room != room) {
            out.push(Bookmark { room, conference });
        }
    }
    out
}

/// What brings the node's `items` to `wanted`: the bookmarks to publish (new or changed; a
/// changed one keeps the extensions it had, which the legacy form cannot carry) and the
/// ids to retract.
pub fn changes(items: &[(String, Element)], wanted: &[Bookmark]) -> (Vec<Bookmark>, Vec<String>) {
    let current = from_items(items);
    let mut publish = Vec::new();
    for w in wanted {
        let mut w = w.clone();
        let old = current.iter().find(|c| c.room == w.room);
        if let Some(old) = old {
            if w.conference.extensions.is_none() {
                w.conference.extensions = old.conference.extensions.clone();
            }
            if Element::from(old.conference.clone()) == Element::from(w.conference.clone()) {
                continue;
            }
        }
        publish.push(w);
    }
    let retract = (items.iter())
        .map(|(id, _)| id)
        .filter(|id| wanted.iter().all(|w| w.room.as_str() != id.as_str()))
        .cloned()
        .collect();
    (publish, retract)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn legacy(xml: &str) -> Storage {
        Storage::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn item(room: &str, xml: &str) -> (String, Element) {
        (room.to_owned(), xml.parse().unwrap())
    }

    #[test]
    fn legacy_bookmarks_become_one_per_room_and_back() {
        let s = legacy(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='a@muc.x' name='A' autojoin='true'><nick>me</nick></conference>\
             <conference jid='b@muc.x'><password>pw</password></conference>\
             <conference jid='a@muc.x' name='A2'/>\
             <url name='site' url='https://x'/></storage>",
        );
        let b = from_legacy(&s);
        let rooms: Vec<&str> = b.iter().map(|b| b.room.as_str()).collect();
        assert_eq!(rooms, ["b@muc.x", "a@muc.x"]);
        assert_eq!(b[1].conference.name.as_deref(), Some("A2"));
        assert_eq!(b[0].conference.password.as_deref(), Some("pw"));
        let back = to_legacy(&b, s.urls.clone());
        assert_eq!(back.conferences.len(), 2);
        assert_eq!(back.urls, s.urls);
        assert_eq!(back.conferences[0].password.as_deref(), Some("pw"));
    }

    #[test]
    fn only_what_changed_is_published_and_extensions_are_kept() {
        let items = [
            item(
                "a@muc.x",
                "<conference xmlns='urn:xmpp:bookmarks:1' name='A'>\
                 <extensions><x xmlns='urn:example'/></extensions></conference>",
            ),
            item("b@muc.x", "<conference xmlns='urn:xmpp:bookmarks:1'/>"),
            item("not a jid@", "<conference xmlns='urn:xmpp:bookmarks:1'/>"),
        ];
        let wanted = from_legacy(&legacy(
            "<storage xmlns='storage:bookmarks'>\
             <conference jid='a@muc.x' name='A'/>\
             <conference jid='c@muc.x' autojoin='true'/></storage>",
        ));
        let (publish, retract) = changes(&items, &wanted);
        let rooms: Vec<&str> = publish.iter().map(|b| b.room.as_str()).collect();
        assert_eq!(rooms, ["c@muc.x"]);
        assert_eq!(retract, ["b@muc.x", "not a jid@"]);

        let renamed = from_legacy(&legacy(
            "<storage xmlns='storage:bookmarks'><conference jid='a@muc.x' name='B'/></storage>",
        ));
        let (publish, _) = changes(&items, &renamed);
        assert_eq!(publish[0].conference.name.as_deref(), Some("B"));
        let ext = publish[0].conference.extensions.as_ref().unwrap();
        assert_eq!(ext.payloads.len(), 1);
    }
}
