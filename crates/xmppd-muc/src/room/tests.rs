use super::*;

const ROOM: &str = "lounge@conference.example.org";

fn limits(rate: u32) -> RoomLimits {
    RoomLimits {
        max_occupants: 50,
        max_history: 20,
        messages_per_second: rate,
    }
}

fn st(xml: &str) -> Element {
    xml.parse().unwrap()
}

fn join(room: &mut Room, from: &str, nick: &str) -> Outcome {
    room.handle(
        &st(&format!(
            "<presence xmlns='jabber:client' from='{from}' to='{ROOM}/{nick}'>\
             <x xmlns='{NS_MUC}'/></presence>"
        )),
        0,
    )
}

fn codes(el: &Element) -> Vec<String> {
    el.get_child("x", NS_MUC_USER)
        .map(|x| {
            x.children()
                .filter(|c| c.is("status", NS_MUC_USER))
                .filter_map(|c| c.attr("code").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn error_of(o: &Outcome) -> Option<String> {
    o.out.iter().find_map(|e| {
        (e.attr("type") == Some("error")).then(|| {
            e.get_child("error", NS_CLIENT)
                .and_then(|er| er.children().next())
                .map(|c| c.name().to_owned())
                .unwrap_or_default()
        })
    })
}

fn to_of(o: &Outcome, to: &str) -> Vec<Element> {
    o.out
        .iter()
        .filter(|e| e.attr("to") == Some(to))
        .cloned()
        .collect()
}

/// A configured room owned by alice (in it as "al") with the given config fields.
fn configured(fields: &str, rate: u32) -> Room {
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

fn field(var: &str, v: &str) -> String {
    format!("<field var='{var}'><value>{v}</value></field>")
}

#[test]
fn a_locked_room_admits_only_its_owner_until_configured() {
    let owner = BareJid::new("alice@example.org").unwrap();
    let mut room = Room::create(BareJid::new(ROOM).unwrap(), owner, limits(0));
    join(&mut room, "alice@example.org/a", "al");
    let o = join(&mut room, "bob@example.org/b", "bob");
    assert_eq!(error_of(&o).as_deref(), Some("item-not-found"));
    // The owner accepts the default (instant room): now anyone may enter.
    let mut room = configured("", 0);
    let o = join(&mut room, "bob@example.org/b", "bob");
    let to_bob = to_of(&o, "bob@example.org/b");
    // Bob sees al, then himself with 110; al sees bob; then the subject follows.
    assert_eq!(to_bob[0].attr("from"), Some(&*format!("{ROOM}/al")));
    assert_eq!(codes(&to_bob[1]), ["110"]);
    assert_eq!(to_of(&o, "alice@example.org/a").len(), 1);
    assert!(o.after[0].get_child("subject", NS_CLIENT).is_some());
    assert!(o.history_for.is_some());
}

#[test]
fn groupchat_reaches_every_session_and_outsiders_are_refused() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    join(&mut room, "bob@example.org/phone", "bob");
    let msg = |from: &str| {
        st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'>\
             <body>hi</body></message>"
        ))
    };
    let o = room.handle(&msg("alice@example.org/a"), 5);
    assert_eq!(o.out.len(), 3, "al and both of bob's sessions");
    assert!(o
        .out
        .iter()
        .all(|m| m.attr("from") == Some(&*format!("{ROOM}/al"))));
    assert_eq!(o.archive.unwrap().stamp_ms, 5);
    let o = room.handle(&msg("carol@example.org/c"), 5);
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
    assert_eq!(o.out.len(), 1);
}

#[test]
fn nick_conflicts_reserved_nicks_and_nick_changes() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    let o = join(&mut room, "carol@example.org/c", "bob");
    assert_eq!(error_of(&o).as_deref(), Some("conflict"));
    let o = join(&mut room, "bob@example.org/b", "robert");
    let to_al = to_of(&o, "alice@example.org/a");
    assert_eq!(to_al[0].attr("type"), Some("unavailable"));
    assert_eq!(codes(&to_al[0]), ["303"]);
    let item = to_al[0]
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("item", NS_MUC_USER))
        .unwrap();
    assert_eq!(item.attr("nick"), Some("robert"));
    assert_eq!(to_al[1].attr("from"), Some(&*format!("{ROOM}/robert")));
    // A member's reserved nick is refused to others.
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='m' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'>\
             <item affiliation='member' jid='dave@example.org' nick='dave'/></query></iq>"
        )),
        0,
    );
    assert_eq!(o.out[0].attr("type"), Some("result"));
    let o = join(&mut room, "carol@example.org/c", "dave");
    assert_eq!(error_of(&o).as_deref(), Some("conflict"));
}

#[test]
fn kick_ban_and_members_only() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    join(&mut room, "carol@example.org/c", "carol");
    let admin = |room: &mut Room, from: &str, item: &str| {
        room.handle(
            &st(&format!(
                "<iq xmlns='jabber:client' type='set' id='k' from='{from}' to='{ROOM}'>\
                 <query xmlns='{NS_MUC_ADMIN}'>{item}</query></iq>"
            )),
            0,
        )
    };
    // A participant may not kick.
    let o = admin(
        &mut room,
        "bob@example.org/b",
        "<item nick='carol' role='none'/>",
    );
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    let o = admin(
        &mut room,
        "alice@example.org/a",
        "<item nick='carol' role='none'><reason>spam</reason></item>",
    );
    let to_carol = to_of(&o, "carol@example.org/c");
    assert_eq!(codes(&to_carol[0]), ["307", "110"]);
    assert_eq!(room.occupant_count(), 2);
    // The owner cannot be kicked by anyone.
    let o = admin(
        &mut room,
        "alice@example.org/a",
        "<item nick='al' role='none'/>",
    );
    assert_eq!(error_of(&o).as_deref(), Some("not-allowed"));
    let o = admin(
        &mut room,
        "alice@example.org/a",
        "<item jid='bob@example.org' affiliation='outcast'/>",
    );
    assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["301", "110"]);
    assert!(o.changed);
    let o = join(&mut room, "bob@example.org/b", "bob");
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    // The last owner cannot step down.
    let o = admin(
        &mut room,
        "alice@example.org/a",
        "<item jid='alice@example.org' affiliation='member'/>",
    );
    assert_eq!(error_of(&o).as_deref(), Some("conflict"));

    let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
    let o = join(&mut room, "carol@example.org/c", "carol");
    assert_eq!(error_of(&o).as_deref(), Some("registration-required"));
}

#[test]
fn moderated_rooms_silence_visitors_until_voice() {
    let mut room = configured(&field("muc#roomconfig_moderatedroom", "1"), 0);
    join(&mut room, "bob@example.org/b", "bob");
    let say = st(&format!(
        "<message xmlns='jabber:client' type='groupchat' from='bob@example.org/b' to='{ROOM}'>\
         <body>hi</body></message>"
    ));
    assert_eq!(
        error_of(&room.handle(&say, 0)).as_deref(),
        Some("forbidden")
    );
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='v' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'><item nick='bob' role='participant'/></query></iq>"
        )),
        0,
    );
    assert_eq!(o.out[0].attr("type"), Some("result"));
    assert_eq!(error_of(&room.handle(&say, 0)), None);
}

#[test]
fn message_rate_is_limited_per_occupant() {
    let mut room = configured("", 2);
    join(&mut room, "bob@example.org/b", "bob");
    let say = |from: &str| {
        st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='{from}' to='{ROOM}'>\
             <body>x</body></message>"
        ))
    };
    // A burst of 4 (twice the rate), then refused, until time passes.
    for _ in 0..4 {
        assert_eq!(error_of(&room.handle(&say("bob@example.org/b"), 0)), None);
    }
    let o = room.handle(&say("bob@example.org/b"), 0);
    assert_eq!(error_of(&o).as_deref(), Some("resource-constraint"));
    assert_eq!(o.out.len(), 1, "nobody else hears a refused message");
    assert_eq!(error_of(&room.handle(&say("alice@example.org/a"), 0)), None);
    assert_eq!(
        error_of(&room.handle(&say("bob@example.org/b"), 1000)),
        None
    );
}

#[test]
fn persistent_rooms_round_trip_through_storage() {
    let mut room = configured(
        &(field("muc#roomconfig_persistentroom", "1")
            + &field("muc#roomconfig_roomname", "Lounge")),
        0,
    );
    room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='m' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_ADMIN}'>\
             <item affiliation='outcast' jid='eve@example.org'/></query></iq>"
        )),
        0,
    );
    room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><subject>Topic</subject></message>"
        )),
        0,
    );
    let stored = room.snapshot();
    let mut back = Room::restore(room.jid.clone(), &stored, limits(0)).unwrap();
    assert_eq!(back.config, room.config);
    assert_eq!(back.subject, "Topic");
    assert_eq!(
        back.affiliation(&BareJid::new("eve@example.org").unwrap()),
        Affiliation::Outcast
    );
    assert!(back.is_owner(&BareJid::new("alice@example.org").unwrap()));
    let o = join(&mut back, "eve@example.org/e", "eve");
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
}

#[test]
fn destroy_tells_everyone_the_alternate_venue() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='set' id='d' from='alice@example.org/a' to='{ROOM}'>\
             <query xmlns='{NS_MUC_OWNER}'><destroy jid='new@conference.example.org'>\
             <reason>moved</reason></destroy></query></iq>"
        )),
        0,
    );
    assert!(o.destroyed && room.gone);
    let to_bob = to_of(&o, "bob@example.org/b");
    let d = to_bob
        .iter()
        .find_map(|p| {
            p.get_child("x", NS_MUC_USER)?
                .get_child("destroy", NS_MUC_USER)
        })
        .unwrap();
    assert_eq!(d.attr("jid"), Some("new@conference.example.org"));
}

#[test]
fn malformed_stanzas_get_errors_not_panics() {
    let mut room = configured("", 0);
    for xml in [
        format!("<iq xmlns='jabber:client' type='get' id='1' from='x@y/z' to='{ROOM}'/>"),
        format!(
            "<iq xmlns='jabber:client' type='set' id='2' from='alice@example.org/a' \
             to='{ROOM}'><query xmlns='{NS_MUC_ADMIN}'><item role='bogus' nick='al'/></query></iq>"
        ),
        format!(
            "<iq xmlns='jabber:client' type='set' id='3' from='alice@example.org/a' \
             to='{ROOM}'><query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>\
             <field var='muc#roomconfig_maxusers'><value>lots</value></field></x></query></iq>"
        ),
        format!("<presence xmlns='jabber:client' from='x@y/z' to='{ROOM}'/>"),
        format!("<message xmlns='jabber:client' from='x@y/z' to='{ROOM}'><body>?</body></message>"),
        format!(
            "<message xmlns='jabber:client' from='alice@example.org/a' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><invite to='@@@'/></x></message>"
        ),
    ] {
        let o = room.handle(&st(&xml), 0);
        assert!(error_of(&o).is_some(), "{xml}");
    }
    // No sender: nobody to answer, nothing happens.
    assert!(room
        .handle(&st("<message xmlns='jabber:client'/>"), 0)
        .out
        .is_empty());
    assert_eq!(room.occupant_count(), 1);
}
