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
    assert!(o.out.is_empty(), "no copy per recipient");
    let [b] = &o.broadcasts[..] else {
        panic!("one broadcast: {:?}", o.broadcasts)
    };
    let mut to: Vec<_> = b.to.iter().map(|j| j.to_string()).collect();
    to.sort();
    assert_eq!(
        to,
        [
            "alice@example.org/a",
            "bob@example.org/b",
            "bob@example.org/phone"
        ],
        "al and both of bob's sessions"
    );
    assert_eq!(b.stanza.attr("from"), Some(&*format!("{ROOM}/al")));
    // Stamped with the end of the millisecond the room accepted it in.
    assert_eq!(o.archive.unwrap().stamp_ms, 6);
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

fn iq(from: &str, kind: &str, payload: &str) -> Element {
    st(&format!(
        "<iq xmlns='jabber:client' type='{kind}' id='i' from='{from}' to='{ROOM}'>{payload}</iq>"
    ))
}

fn ask(room: &mut Room, from: &str, kind: &str, payload: &str) -> Outcome {
    room.handle(&iq(from, kind, payload), 0)
}

fn register(room: &mut Room, from: &str, nick: &str) -> Outcome {
    ask(
        room,
        from,
        "set",
        &format!(
            "<query xmlns='{NS_REGISTER}'><x xmlns='jabber:x:data' type='submit'>\
                 {}{}</x></query>",
            field("FORM_TYPE", crate::form::FORM_REGISTER),
            field("muc#register_roomnick", nick)
        ),
    )
}

fn admin_item(from: &str, item: &str) -> Element {
    iq(
        from,
        "set",
        &format!("<query xmlns='{NS_MUC_ADMIN}'>{item}</query>"),
    )
}

/// An affiliation or role change by alice, the owner, that must succeed.
fn admin_set(room: &mut Room, item: &str) {
    let o = room.handle(&admin_item("alice@example.org/a", item), 0);
    assert_eq!(error_of(&o), None, "{item}");
}

fn item_of(el: &Element) -> &Element {
    el.get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("item", NS_MUC_USER))
        .unwrap()
}

#[test]
fn registration_reserves_a_nick_and_makes_a_member() {
    let mut room = configured(&field("muc#roomconfig_persistentroom", "1"), 0);
    let bob = BareJid::new("bob@example.org").unwrap();
    // The form first, with the nick field required.
    let o = ask(
        &mut room,
        "bob@example.org/b",
        "get",
        &format!("<query xmlns='{NS_REGISTER}'/>"),
    );
    let form = o.out[0]
        .get_child("query", NS_REGISTER)
        .and_then(|q| q.get_child("x", crate::form::NS_DATA))
        .unwrap();
    assert!(form
        .children()
        .any(|f| f.attr("var") == Some("muc#register_roomnick")
            && f.get_child("required", crate::form::NS_DATA).is_some()));
    let o = register(&mut room, "bob@example.org/b", "Bobby");
    assert_eq!(o.out[0].attr("type"), Some("result"));
    assert!(o.changed);
    // Registering tells nobody else (bob is not in the room): no 101 for one's own act.
    assert_eq!(o.out.len(), 1);
    assert_eq!(room.affiliation(&bob), Affiliation::Member);
    assert_eq!(room.reserved_nick(&bob), Some("Bobby"));
    // Asking again shows the registration.
    let o = ask(
        &mut room,
        "bob@example.org/b",
        "get",
        &format!("<query xmlns='{NS_REGISTER}'/>"),
    );
    let q = o.out[0].get_child("query", NS_REGISTER).unwrap();
    assert!(q.get_child("registered", NS_REGISTER).is_some());
    assert_eq!(
        q.get_child("username", NS_REGISTER).map(|u| u.text()),
        Some("Bobby".into())
    );
    // §7.12: bob discovers his nick; carol has none.
    let mine = |room: &mut Room, from: &str| {
        ask(
            room,
            from,
            "get",
            &format!("<query xmlns='{NS_DISCO_INFO}' node='{NODE_ROOMUSER}'/>"),
        )
    };
    let o = mine(&mut room, "bob@example.org/b");
    let q = o.out[0].get_child("query", NS_DISCO_INFO).unwrap();
    assert_eq!(q.attr("node"), Some(NODE_ROOMUSER));
    let id = q.get_child("identity", NS_DISCO_INFO).unwrap();
    assert_eq!(
        (id.attr("category"), id.attr("name")),
        (Some("conference"), Some("Bobby"))
    );
    let o = mine(&mut room, "carol@example.org/c");
    assert_eq!(
        o.out[0]
            .get_child("query", NS_DISCO_INFO)
            .unwrap()
            .children()
            .count(),
        0
    );
    // Carol may neither take nor register it; bob joins with it.
    let o = join(&mut room, "carol@example.org/c", "Bobby");
    assert_eq!(error_of(&o).as_deref(), Some("conflict"));
    let o = register(&mut room, "carol@example.org/c", "Bobby");
    assert_eq!(error_of(&o).as_deref(), Some("conflict"));
    let o = join(&mut room, "bob@example.org/b", "Bobby");
    assert_eq!(error_of(&o), None);
    // The member list shows the nick, which survives a promotion and a restart.
    room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='admin' jid='bob@example.org'/>",
        ),
        0,
    );
    let o = ask(
        &mut room,
        "alice@example.org/a",
        "get",
        &format!("<query xmlns='{NS_MUC_ADMIN}'><item affiliation='admin'/></query>"),
    );
    let item = o.out[0]
        .get_child("query", NS_MUC_ADMIN)
        .and_then(|q| q.get_child("item", NS_MUC_ADMIN))
        .unwrap();
    assert_eq!(item.attr("nick"), Some("Bobby"));
    let back = Room::restore(room.jid.clone(), &room.snapshot(), limits(0)).unwrap();
    assert_eq!(back.reserved_nick(&bob), Some("Bobby"));
    // Cancelling the registration frees the nick; an admin stays an admin.
    let o = ask(
        &mut room,
        "bob@example.org/b",
        "set",
        &format!("<query xmlns='{NS_REGISTER}'><remove/></query>"),
    );
    assert_eq!(o.out[0].attr("type"), Some("result"));
    assert_eq!(room.reserved_nick(&bob), None);
    assert_eq!(room.affiliation(&bob), Affiliation::Admin);
    // No nick, a bad nick, a foreign form: errors.
    for bad in ["", "  "] {
        let o = register(&mut room, "carol@example.org/c", bad);
        assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
    }
    let o = ask(
        &mut room,
        "carol@example.org/c",
        "set",
        &format!("<query xmlns='{NS_REGISTER}'/>"),
    );
    assert_eq!(error_of(&o).as_deref(), Some("bad-request"));
}

#[test]
fn members_only_rooms_register_members_only_when_configured() {
    let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
    let o = register(&mut room, "carol@example.org/c", "carol");
    assert_eq!(error_of(&o).as_deref(), Some("not-allowed"));
    // A member may reserve a nick.
    room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='member' jid='bob@example.org'/>",
        ),
        0,
    );
    assert_eq!(
        error_of(&register(&mut room, "bob@example.org/b", "bob")),
        None
    );
    // Open registration lets anyone not banned become a member.
    let mut room = configured(
        &(field("muc#roomconfig_membersonly", "1")
            + &field(crate::form::FIELD_OPEN_REGISTRATION, "1")),
        0,
    );
    assert_eq!(
        error_of(&register(&mut room, "carol@example.org/c", "cc")),
        None
    );
    assert_eq!(
        error_of(&join(&mut room, "carol@example.org/c", "cc")),
        None
    );
    room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='outcast' jid='eve@example.org'/>",
        ),
        0,
    );
    let o = register(&mut room, "eve@example.org/e", "eve");
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
}

#[test]
fn affiliation_changes_reach_absent_users_and_remove_non_members() {
    let mut room = configured("", 0);
    // Dave is not in the room: he gets a message with 101.
    let o = room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='member' jid='dave@example.org'><reason>welcome</reason></item>",
        ),
        0,
    );
    let msg = to_of(&o, "dave@example.org");
    assert_eq!(msg.len(), 1, "{:?}", o.out);
    assert_eq!(msg[0].name(), "message");
    assert_eq!(codes(&msg[0]), ["101"]);
    let item = item_of(&msg[0]);
    assert_eq!(
        (item.attr("affiliation"), item.attr("jid")),
        (Some("member"), Some("dave@example.org"))
    );
    // Setting the same affiliation again tells nobody anything new.
    let o = room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='member' jid='dave@example.org'/>",
        ),
        0,
    );
    assert!(to_of(&o, "dave@example.org").is_empty());

    // Revoking membership in a members-only room removes the occupant with 321.
    let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
    room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='member' jid='bob@example.org'/>",
        ),
        0,
    );
    join(&mut room, "bob@example.org/b", "bob");
    let o = room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='none' jid='bob@example.org'/>",
        ),
        0,
    );
    assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["321", "110"]);
    let seen = to_of(&o, "alice@example.org/a");
    let seen = seen.iter().find(|p| p.name() == "presence").unwrap();
    assert_eq!(codes(seen), ["321"]);
    assert!(
        to_of(&o, "bob@example.org").is_empty(),
        "no 101 to an occupant"
    );
    assert_eq!(room.occupant_count(), 1);

    // Turning a room members-only removes the non-members with 322.
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    let o = ask(
        &mut room,
        "alice@example.org/a",
        "set",
        &format!(
            "<query xmlns='{NS_MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>{}</x>\
                 </query>",
            field("muc#roomconfig_membersonly", "1")
        ),
    );
    let to_bob = to_of(&o, "bob@example.org/b");
    let gone = to_bob.iter().find(|p| p.name() == "presence").unwrap();
    assert_eq!(gone.attr("type"), Some("unavailable"));
    assert_eq!(codes(gone), ["322", "110"]);
    assert_eq!(room.occupant_count(), 1);
}

#[test]
fn voice_requests_reach_moderators_and_approval_grants_voice() {
    let mut room = configured(&field("muc#roomconfig_moderatedroom", "1"), 0);
    join(&mut room, "bob@example.org/b", "bob");
    let o = room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' from='bob@example.org/b' to='{ROOM}'>\
             <x xmlns='jabber:x:data' type='submit'>{}{}</x></message>",
            field("FORM_TYPE", crate::form::FORM_REQUEST),
            field("muc#role", "participant")
        )),
        0,
    );
    assert_eq!(o.out.len(), 1, "only the moderator hears it");
    let req = &to_of(&o, "alice@example.org/a")[0];
    let form = Form::parse(req.get_child("x", crate::form::NS_DATA).unwrap()).unwrap();
    assert_eq!(form.value("muc#roomnick"), Some("bob"));
    // Bob cannot approve himself.
    let approve = |from: &str| {
        st(&format!(
            "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='jabber:x:data' type='submit'>{}{}{}</x></message>",
            field("FORM_TYPE", crate::form::FORM_REQUEST),
            field("muc#roomnick", "bob"),
            field("muc#request_allow", "true")
        ))
    };
    let o = room.handle(&approve("bob@example.org/b"), 0);
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    let o = room.handle(&approve("alice@example.org/a"), 0);
    let p = &to_of(&o, "bob@example.org/b")[0];
    assert_eq!(item_of(p).attr("role"), Some("participant"));
}

fn invite(room: &mut Room, from: &str, to: &str, now_ms: i64) -> Outcome {
    room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><invite to='{to}'><reason>join us</reason></invite></x>\
             </message>"
        )),
        now_ms,
    )
}

fn decline(room: &mut Room, from: &str, to: &str, now_ms: i64) -> Outcome {
    room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' from='{from}' to='{ROOM}'>\
             <x xmlns='{NS_MUC_USER}'><decline to='{to}'><reason>busy</reason></decline></x>\
             </message>"
        )),
        now_ms,
    )
}

fn invitation_to(o: &Outcome, to: &str) -> Option<Element> {
    to_of(o, to).into_iter().find(|m| {
        m.get_child("x", NS_MUC_USER)
            .and_then(|x| x.get_child("invite", NS_MUC_USER))
            .is_some()
    })
}

#[test]
fn declines_go_to_the_inviter_of_a_pending_invitation_only() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    // A decline from someone never invited goes nowhere: the room has no inviter to tell.
    let o = decline(&mut room, "carol@example.org/c", "alice@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
    assert_eq!(o.out.len(), 1, "only the error, to carol: {:?}", o.out);

    let o = invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
    let inv = invitation_to(&o, "carol@example.org").unwrap();
    assert_eq!(inv.attr("from"), Some(ROOM));
    // Carol declines naming bob: the decline still goes to alice, who invited her, and to
    // nobody else.
    let o = decline(&mut room, "carol@example.org/c", "bob@example.org", 5);
    assert_eq!(o.out.len(), 1, "{:?}", o.out);
    let m = &to_of(&o, "alice@example.org")[0];
    assert_eq!(m.attr("from"), Some(ROOM));
    let d = m
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("decline", NS_MUC_USER))
        .unwrap();
    assert_eq!(d.attr("from"), Some("carol@example.org"));
    assert_eq!(
        d.get_child("reason", NS_MUC_USER).map(|r| r.text()),
        Some("busy".into())
    );
    // One invitation, one decline.
    let o = decline(&mut room, "carol@example.org/c", "alice@example.org", 6);
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));

    // Two inviters: the decline goes to the one it names.
    room.config.allow_invites = true;
    invite(&mut room, "alice@example.org/a", "dave@example.org", 10);
    invite(&mut room, "bob@example.org/b", "dave@example.org", 11);
    let o = decline(&mut room, "dave@example.org/d", "alice@example.org", 12);
    assert_eq!(to_of(&o, "alice@example.org").len(), 1);
    let o = decline(&mut room, "dave@example.org/d", "alice@example.org", 13);
    assert_eq!(
        to_of(&o, "bob@example.org").len(),
        1,
        "the one left: {:?}",
        o.out
    );
}

#[test]
fn pending_invitations_expire_are_bounded_and_end_on_entering() {
    let mut room = configured("", 0);
    invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
    let o = decline(
        &mut room,
        "carol@example.org/c",
        "alice@example.org",
        INVITE_TTL_MS + 1,
    );
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"), "expired");

    for i in 0..=MAX_PENDING_INVITES {
        invite(
            &mut room,
            "alice@example.org/a",
            &format!("u{i}@example.org"),
            0,
        );
    }
    let o = decline(&mut room, "u0@example.org/x", "alice@example.org", 1);
    assert_eq!(
        error_of(&o).as_deref(),
        Some("not-acceptable"),
        "the oldest was forgotten"
    );
    let o = decline(&mut room, "u1@example.org/x", "alice@example.org", 1);
    assert_eq!(to_of(&o, "alice@example.org").len(), 1);

    // Entering the room answers the invitation: no decline may follow.
    join(&mut room, "u2@example.org/x", "u2");
    let o = decline(&mut room, "u2@example.org/x", "alice@example.org", 1);
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
}

#[test]
fn only_occupants_invite_and_never_to_this_service() {
    let mut room = configured("", 0);
    // Not in the room: refused, nothing sent to the invitee.
    let o = invite(&mut room, "carol@example.org/c", "dave@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("not-acceptable"));
    assert_eq!(o.out.len(), 1);
    // An occupant who is not a moderator, while the room does not allow invitations.
    join(&mut room, "bob@example.org/b", "bob");
    let o = invite(&mut room, "bob@example.org/b", "dave@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    // The room itself, another room, an occupant JID or the service: never.
    for to in [
        ROOM.to_owned(),
        "other@conference.example.org".to_owned(),
        format!("{ROOM}/bob"),
        "conference.example.org".to_owned(),
    ] {
        let o = invite(&mut room, "alice@example.org/a", &to, 0);
        assert_eq!(error_of(&o).as_deref(), Some("bad-request"), "{to}");
        assert_eq!(o.out.len(), 1, "{to}");
    }
    invite(&mut room, "alice@example.org/a", "carol@example.org", 0);
    for to in [ROOM, "conference.example.org"] {
        let o = decline(&mut room, "carol@example.org/c", to, 0);
        assert_eq!(error_of(&o).as_deref(), Some("bad-request"), "{to}");
        assert_eq!(o.out.len(), 1, "{to}");
    }
    // A banned user is not invited (and so not made a member).
    admin_set(
        &mut room,
        "<item jid='eve@example.org' affiliation='outcast'/>",
    );
    let o = invite(&mut room, "alice@example.org/a", "eve@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    assert_eq!(
        room.affiliation(&BareJid::new("eve@example.org").unwrap()),
        Affiliation::Outcast
    );
}

#[test]
fn members_only_invitations_add_members_when_the_inviter_may_edit_the_list() {
    let mut room = configured(&field("muc#roomconfig_membersonly", "1"), 0);
    for who in ["bob", "carol"] {
        admin_set(
            &mut room,
            &format!("<item jid='{who}@example.org' affiliation='member'/>"),
        );
    }
    admin_set(
        &mut room,
        "<item jid='ann@example.org' affiliation='admin'/>",
    );
    join(&mut room, "bob@example.org/b", "bob");
    join(&mut room, "ann@example.org/a", "ann");
    // A moderator who is only a member does not edit the member list.
    admin_set(&mut room, "<item nick='bob' role='moderator'/>");
    let dave = BareJid::new("dave@example.org").unwrap();
    let o = invite(&mut room, "bob@example.org/b", "dave@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    assert_eq!(room.affiliation(&dave), Affiliation::None);
    // An admin's invitation makes the invitee a member (§7.8.2).
    let o = invite(&mut room, "ann@example.org/a", "dave@example.org", 0);
    assert!(invitation_to(&o, "dave@example.org").is_some());
    assert!(o.changed);
    assert_eq!(room.affiliation(&dave), Affiliation::Member);
    // With muc#roomconfig_allowinvites, members invite too, and add members.
    room.config.allow_invites = true;
    let erin = BareJid::new("erin@example.org").unwrap();
    let o = invite(&mut room, "bob@example.org/b", "erin@example.org", 0);
    assert!(invitation_to(&o, "erin@example.org").is_some());
    assert_eq!(room.affiliation(&erin), Affiliation::Member);
    // Nor does it lift a ban: only the outcast list does.
    admin_set(
        &mut room,
        "<item jid='eve@example.org' affiliation='outcast'/>",
    );
    let o = invite(&mut room, "ann@example.org/a", "eve@example.org", 0);
    assert_eq!(error_of(&o).as_deref(), Some("forbidden"));
    let eve = BareJid::new("eve@example.org").unwrap();
    assert_eq!(room.affiliation(&eve), Affiliation::Outcast);
    // An invitation never lowers an affiliation.
    invite(&mut room, "bob@example.org/b", "ann@example.org", 0);
    assert_eq!(
        room.affiliation(&BareJid::new("ann@example.org").unwrap()),
        Affiliation::Admin
    );
}

#[test]
fn history_since_keeps_a_message_accepted_later_in_the_same_millisecond() {
    let mut room = configured("", 0);
    let o = room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><body>hi</body></message>"
        )),
        // The clock reads whole milliseconds: this is some instant in [5.000 s, 5.001 s).
        5_000,
    );
    let entries = [o.archive.unwrap()];
    let since = |s: &str| {
        let h = st(&format!("<history xmlns='{NS_MUC}' since='{s}'/>"));
        HistoryQuery::parse(Some(&h)).select(&entries, 6_000).len()
    };
    // A client read its clock at 5.0004 s, then sent the message: the message is after that
    // instant, whichever part of the millisecond the room accepted it in.
    assert_eq!(since("1970-01-01T00:00:05.0004Z"), 1);
    assert_eq!(since("1970-01-01T00:00:04.999Z"), 1);
    // A `since` copied from the message's own delay stamp leaves it out.
    let stamp = xmppd_core::stanza::xep82_datetime(entries[0].stamp_ms);
    assert_eq!(since(&stamp), 0);
    assert_eq!(since("1970-01-01T00:00:05.002Z"), 0);
}

#[test]
fn history_requests_are_read_from_the_join() {
    let mut room = configured("", 0);
    let since = xmppd_core::stanza::xep82_datetime(1_700_000_000_000);
    let o = room.handle(
        &st(&format!(
            "<presence xmlns='jabber:client' from='bob@example.org/b' to='{ROOM}/bob'>\
             <x xmlns='{NS_MUC}'><history maxchars='300' seconds='60' since='{since}'/></x>\
             </presence>"
        )),
        0,
    );
    let (to, q) = o.history_for.unwrap();
    assert_eq!(to.to_string(), "bob@example.org/b");
    assert_eq!(
        q,
        HistoryQuery {
            max_chars: Some(300),
            max_stanzas: None,
            seconds: Some(60),
            since_ms: Some(1_700_000_000_000),
        }
    );
}

#[test]
fn several_sessions_are_one_occupant_and_iq_answers_find_their_session() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    let o = join(&mut room, "bob@example.org/phone", "bob");
    // Alice sees bob (again) under one occupant JID, never a second occupant.
    let to_al = to_of(&o, "alice@example.org/a");
    assert!(to_al
        .iter()
        .all(|p| p.attr("from") == Some(&*format!("{ROOM}/bob"))));
    assert_eq!(room.occupant_count(), 2);
    // Bob's second session asks al; al's answer goes back to that session.
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='get' id='v1' from='bob@example.org/phone' \
             to='{ROOM}/al'><query xmlns='jabber:iq:version'/></iq>"
        )),
        0,
    );
    assert_eq!(o.out[0].attr("to"), Some("alice@example.org/a"));
    assert_eq!(o.out[0].attr("from"), Some(&*format!("{ROOM}/bob")));
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='result' id='v1' from='alice@example.org/a' \
             to='{ROOM}/bob'/>"
        )),
        0,
    );
    assert_eq!(o.out[0].attr("to"), Some("bob@example.org/phone"));
    // A request to bob goes to one session only: the oldest.
    let o = room.handle(
        &st(&format!(
            "<iq xmlns='jabber:client' type='get' id='p' from='alice@example.org/a' \
             to='{ROOM}/bob'><query xmlns='jabber:iq:version'/></iq>"
        )),
        0,
    );
    assert_eq!(o.out.len(), 1);
    assert_eq!(o.out[0].attr("to"), Some("bob@example.org/b"));
    // One session going away (e.g. its connection dropped) is invisible to the others; the
    // last one leaving is the occupant leaving.
    let gone = |res: &str| {
        st(&format!(
            "<presence xmlns='jabber:client' type='unavailable' from='bob@example.org/{res}' \
             to='{ROOM}/bob'/>"
        ))
    };
    let o = room.handle(&gone("b"), 0);
    assert!(to_of(&o, "alice@example.org/a").is_empty());
    assert_eq!(codes(&to_of(&o, "bob@example.org/b")[0]), ["110"]);
    let o = room.handle(&gone("phone"), 0);
    assert_eq!(
        to_of(&o, "alice@example.org/a")[0].attr("type"),
        Some("unavailable")
    );
    assert_eq!(room.occupant_count(), 1);
}

/// The affiliations in a `muc#admin` list answer, or the error condition.
fn list(room: &mut Room, from: &str, aff: &str) -> Result<Vec<String>, String> {
    let o = ask(
        room,
        from,
        "get",
        &format!("<query xmlns='{NS_MUC_ADMIN}'><item affiliation='{aff}'/></query>"),
    );
    if let Some(e) = error_of(&o) {
        return Err(e);
    }
    let q = o.out[0].get_child("query", NS_MUC_ADMIN).unwrap();
    Ok(q.children()
        .filter_map(|i| i.attr("jid").map(str::to_owned))
        .collect())
}

#[test]
fn members_of_private_non_anonymous_rooms_read_the_affiliation_lists() {
    let private =
        field("muc#roomconfig_membersonly", "1") + &field("muc#roomconfig_whois", "anyone");
    for (fields, members_read) in [
        (private.as_str(), true),
        (&field("muc#roomconfig_membersonly", "1"), false),
        (&field("muc#roomconfig_whois", "anyone"), false),
    ] {
        let mut room = configured(fields, 0);
        for item in [
            "<item affiliation='member' jid='bob@example.org'/>",
            "<item affiliation='admin' jid='carol@example.org'/>",
            "<item affiliation='outcast' jid='eve@example.org'/>",
        ] {
            room.handle(&admin_item("alice@example.org/a", item), 0);
        }
        let bob = "bob@example.org/b";
        for aff in ["member", "admin", "owner"] {
            let got = list(&mut room, bob, aff);
            if members_read {
                assert_eq!(got.map(|v| v.len()), Ok(1), "{fields} {aff}");
            } else {
                assert_eq!(got, Err("forbidden".into()), "{fields} {aff}");
            }
        }
        assert_eq!(
            list(&mut room, bob, "member"),
            if members_read {
                Ok(vec!["bob@example.org".into()])
            } else {
                Err("forbidden".into())
            }
        );
        // The ban list stays with the admins; outsiders never read any list.
        assert_eq!(list(&mut room, bob, "outcast"), Err("forbidden".into()));
        assert_eq!(
            list(&mut room, "carol@example.org/c", "outcast"),
            Ok(vec!["eve@example.org".into()])
        );
        assert_eq!(
            list(&mut room, "dave@example.org/d", "member"),
            Err("forbidden".into())
        );
    }
}

#[test]
fn only_errors_showing_an_unreachable_client_remove_the_occupant() {
    let mut room = configured("", 0);
    join(&mut room, "bob@example.org/b", "bob");
    let error = |kind: &str, condition: &str| {
        st(&format!(
            "<{kind} xmlns='jabber:client' type='error' from='bob@example.org/b' \
             to='{ROOM}/al'><error type='cancel'>\
             <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></{kind}>"
        ))
    };
    // A client refusing one stanza (blocking, unsupported payload) stays; nothing is sent.
    for kind in ["message", "presence"] {
        for condition in ["feature-not-implemented", "forbidden", "not-acceptable"] {
            let o = room.handle(&error(kind, condition), 0);
            assert!(o.out.is_empty(), "{kind} {condition}: {:?}", o.out);
            assert_eq!(room.occupant_count(), 2, "{kind} {condition}");
        }
    }
    // An error without a condition says nothing about reachability either.
    let bare = st(&format!(
        "<message xmlns='jabber:client' type='error' from='bob@example.org/b' to='{ROOM}'/>"
    ));
    room.handle(&bare, 0);
    assert_eq!(room.occupant_count(), 2);
    for (kind, condition) in [
        ("message", "recipient-unavailable"),
        ("presence", "remote-server-not-found"),
        ("message", "gone"),
    ] {
        let o = room.handle(&error(kind, condition), 0);
        let gone = &to_of(&o, "alice@example.org/a")[0];
        assert_eq!(gone.attr("type"), Some("unavailable"));
        assert_eq!(codes(gone), ["333"], "{kind} {condition}");
        assert!(gone.get_child("error", NS_CLIENT).is_none(), "not echoed");
        assert_eq!(room.occupant_count(), 1);
        join(&mut room, "bob@example.org/b", "bob");
    }
}

#[test]
fn voice_and_kicks_respect_affiliation_rank() {
    let mut room = configured("", 0);
    let alice = "alice@example.org/a";
    for (jid, aff) in [("bob", "member"), ("carol", "member"), ("erin", "admin")] {
        room.handle(
            &admin_item(
                alice,
                &format!("<item affiliation='{aff}' jid='{jid}@example.org'/>"),
            ),
            0,
        );
        join(&mut room, &format!("{jid}@example.org/r"), jid);
    }
    join(&mut room, "dave@example.org/r", "dave");
    join(&mut room, "eve@example.org/r", "eve");
    // A member and an unaffiliated user made moderators by the owner.
    for nick in ["bob", "dave"] {
        let o = room.handle(
            &admin_item(alice, &format!("<item nick='{nick}' role='moderator'/>")),
            0,
        );
        assert_eq!(error_of(&o), None);
    }
    let set = |room: &mut Room, from: &str, nick: &str, role: &str| {
        let item = format!("<item nick='{nick}' role='{role}'/>");
        let resource = if from == "alice" { "a" } else { "r" };
        let from = format!("{from}@example.org/{resource}");
        error_of(&room.handle(&admin_item(&from, &item), 0))
    };
    let refused = Some("not-allowed".to_owned());
    // §8.5: a member who moderates cannot silence another member; nobody silences an admin.
    assert_eq!(set(&mut room, "bob", "carol", "visitor"), refused);
    assert_eq!(set(&mut room, "dave", "carol", "visitor"), refused);
    assert_eq!(set(&mut room, "alice", "erin", "visitor"), refused);
    // §8.2: nobody kicks an occupant of higher affiliation.
    assert_eq!(set(&mut room, "dave", "carol", "none"), refused);
    assert_eq!(set(&mut room, "bob", "erin", "none"), refused);
    assert_eq!(room.occupant_count(), 6);
    // Lower affiliations are fair game; an owner silences a member.
    assert_eq!(set(&mut room, "bob", "eve", "visitor"), None);
    assert_eq!(set(&mut room, "dave", "eve", "none"), None);
    assert_eq!(set(&mut room, "alice", "carol", "visitor"), None);
    assert_eq!(set(&mut room, "bob", "carol", "none"), None);
    assert_eq!(room.occupant_count(), 4);
}

#[test]
fn a_full_room_says_wait() {
    let mut room = configured(&field("muc#roomconfig_maxusers", "1"), 0);
    let o = join(&mut room, "bob@example.org/b", "bob");
    let err = o.out[0].get_child("error", NS_CLIENT).unwrap();
    assert!(err.has_child("service-unavailable", xmppd_core::stanza::NS_STANZAS));
    assert_eq!(err.attr("type"), Some("wait"));
}

#[test]
fn a_removed_owner_is_forgotten_and_an_administrator_can_adopt_the_room() {
    let mut room = configured(&field("muc#roomconfig_persistentroom", "1"), 0);
    let alice = BareJid::new("alice@example.org").unwrap();
    let carol = BareJid::new("carol@example.org").unwrap();
    join(&mut room, "carol@example.org/c", "carol");
    assert!(room.forget_account(&alice));
    assert!(!room.forget_account(&alice));
    assert!(room.owners().is_empty());
    assert!(room.snapshot().affiliations.is_empty());
    let config = format!(
        "<iq xmlns='jabber:client' type='get' id='g' from='carol@example.org/c' to='{ROOM}'>\
         <query xmlns='{NS_MUC_OWNER}'/></iq>"
    );
    assert_eq!(
        error_of(&room.handle(&st(&config), 0)).as_deref(),
        Some("forbidden")
    );

    // carol is in the room: every occupant sees her new affiliation.
    let o = room.adopt(&carol);
    assert!(o.changed);
    let seen = to_of(&o, "carol@example.org/c");
    let item = seen[0]
        .get_child("x", NS_MUC_USER)
        .and_then(|x| x.get_child("item", NS_MUC_USER))
        .unwrap();
    assert_eq!(item.attr("affiliation"), Some("owner"));
    assert_eq!(room.owners(), [carol]);
    assert_eq!(
        room.handle(&st(&config), 0).out[0].attr("type"),
        Some("result")
    );
}

#[test]
fn a_large_groupchat_to_many_occupants_is_one_element() {
    let mut room = configured("", 0);
    for i in 0..49 {
        join(
            &mut room,
            &format!("user{i}@example.org/r"),
            &format!("n{i}"),
        );
    }
    let body = "z".repeat(256 * 1024);
    let mut o = room.handle(
        &st(&format!(
            "<message xmlns='jabber:client' type='groupchat' from='alice@example.org/a' \
             to='{ROOM}'><body>{body}</body></message>"
        )),
        0,
    );
    let sends = o.take_sends();
    let [Send::Shared(stanza, to)] = &sends[..] else {
        panic!("one shared send, got {}", sends.len())
    };
    assert_eq!(to.len(), 50);
    assert_eq!(
        Arc::strong_count(stanza),
        1,
        "held once, for every recipient"
    );
}

#[test]
fn broadcasts_keep_their_place_among_the_other_stanzas() {
    let el = |id: &str| st(&format!("<message xmlns='jabber:client' id='{id}'/>"));
    let shared = |id: &str, at: usize| Broadcast {
        at,
        stanza: Arc::new(el(id)),
        to: vec![FullJid::new("a@example.org/r").unwrap()],
    };
    let mut o = Outcome {
        out: vec![el("1"), el("3")],
        broadcasts: vec![shared("0", 0), shared("2", 1), shared("4", 2)],
        ..Outcome::default()
    };
    let ids: Vec<_> = (o.take_sends().iter())
        .map(|s| match s {
            Send::One(e) => e.attr("id").unwrap().to_owned(),
            Send::Shared(e, _) => e.attr("id").unwrap().to_owned(),
        })
        .collect();
    assert_eq!(ids, ["0", "1", "2", "3", "4"]);
}

/// RFC 7622 §3.2: a JID written with a final dot on its domain names the same entity, in an
/// affiliation change, an invitation and a decline alike.
#[test]
fn jids_in_payloads_lose_the_final_dot() {
    let mut room = configured("", 0);
    let o = room.handle(
        &admin_item(
            "alice@example.org/a",
            "<item affiliation='member' jid='dave@example.org.'/>",
        ),
        0,
    );
    assert_eq!(to_of(&o, "dave@example.org").len(), 1, "{:?}", o.out);
    let dave = BareJid::new("dave@example.org").unwrap();
    assert_eq!(room.affiliation(&dave), Affiliation::Member);

    let o = invite(&mut room, "alice@example.org/a", "carol@example.org.", 0);
    assert!(
        invitation_to(&o, "carol@example.org").is_some(),
        "{:?}",
        o.out
    );

    // Two inviters: the decline goes to the one it names, final dot or not.
    join(&mut room, "bob@example.org/b", "bob");
    room.config.allow_invites = true;
    invite(&mut room, "alice@example.org/a", "erin@example.org", 1);
    invite(&mut room, "bob@example.org/b", "erin@example.org", 2);
    let o = decline(&mut room, "erin@example.org/e", "alice@example.org.", 3);
    assert_eq!(to_of(&o, "alice@example.org").len(), 1, "{:?}", o.out);
}
