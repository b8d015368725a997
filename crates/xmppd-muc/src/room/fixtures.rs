//! Rooms and stanzas the room's tests share.

use xmppd_core::stanza::NS_CLIENT;

use super::*;

pub(super) const ROOM: &str = "lounge@conference.example.org";

pub(super) fn limits(rate: u32) -> RoomLimits {
    RoomLimits {
        max_occupants: 50,
        max_history: 20,
        messages_per_second: rate,
    }
}

pub(super) fn st(xml: &str) -> Element {
    xml.parse().unwrap()
}

pub(super) fn join(room: &mut Room, from: &str, nick: &str) -> Outcome {
    room.handle(
        &st(&format!(
            "<presence xmlns='jabber:client' from='{from}' to='{ROOM}/{nick}'>\
             <x xmlns='{NS_MUC}'/></presence>"
        )),
        0,
    )
}

pub(super) fn codes(el: &Element) -> Vec<String> {
    el.get_child("x", NS_MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", NS_MUC_USER))
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn error_of(o: &Outcome) -> Option<String> {
    o.out.iter().find_map(|e| {
        (e.attr("type") == Some("error")).then(|| {
            e.get_child("error", NS_CLIENT)
                .and_then(|er| er.children().next())
                .map(|c| c.name().to_owned())
                .unwrap_or_default()
        })
    })
}

pub(super) fn to_of(o: &Outcome, to: &str) -> Vec<Element> {
    o.out
        .iter()
        .filter(|e| e.attr("to") == Some(to))
        .cloned()
        .collect()
}

/// A configured room owned by alice (in it as "al") with the given config fields.
pub(super) fn configured(fields: &str, rate: u32) -> Room {
    let owner = BareJid::new("alice@example.org").unwrap();
    let mut room = Room::create(BareJid::new(ROOM).unwrap(), owner, limits(rate));
    let o = join(&mut room, "alice@example.org/a", "al");
    let self_p = to_of(&o, "alice@example.org/a");
    assert_eq!(codes(&self_p[0]), ["110", "201"]);
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='c' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>{fields}</x>\
             </query></iq>"
        )),
        0,
    );
    assert_eq!(o.out[0].attr("type"), Some("result"));
    assert!(o.changed && !room.locked);
    room
}

pub(super) fn field(var: &str, v: &str) -> String {
    format!("<field var='{var}'><value>{v}</value></field>")
}

pub(super) fn iq(from: &str, kind: &str, payload: &str) -> Element {
    st(&format!(
        "<iq xmlns='jabber:client' type='{kind}' id='i' from='{from}' to='{ROOM}'>{payload}</iq>"
    ))
}

pub(super) fn ask(room: &mut Room, from: &str, kind: &str, payload: &str) -> Outcome {
    room.handle(&iq(from, kind, payload), 0)
}

pub(super) fn admin_item(from: &str, item: &str) -> Element {
    iq(
        from,
        "set",
        &format!("<query xmlns='{NS_MUC_ADMIN}'>{item}</query>"),
    )
}

/// An affiliation or role change by alice, the owner, that must succeed.
pub(super) fn admin_set(room: &mut Room, item: &str) {
    let o = room.handle(&admin_item("alice@example.org/a", item), 0);
    assert_eq!(error_of(&o), None, "{item}");
}

pub(super) fn item_of(el: &Element) -> &Element {
    el.get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("item", NS_MUC_USER))
        .unwrap()
}
