"""Multi-user chat (XEP-0045) on conference.localhost, through slixmpp's xep_0045 plugin.

Three users create and run a persistent members-only room (configuration, membership, chat,
subject, nick change, kick, ban, invitation, a refused non-member); the room, its
configuration and affiliations survive a restart of xmppd; history limits, private messages,
self-ping, disco, and the creation limits.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from clients import CLIENT_NS, async_test, login, q, stanza_error

MUC = "conference.localhost"
ROOM = f"lounge@{MUC}"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
USERS = ("alice", "bob", "carol", "dave")


async def muc_login(server, user: str, **kw):
    client = await login(server, user, **kw)
    client.register_plugin("xep_0045")
    client.register_plugin("xep_0004")
    return client


def codes(e: ET.Element) -> set[str]:
    return {s.get("code") for s in e.iter(q(NS_MUC_USER, "status"))}


def muc_presence(frm: str, ptype: str | None = None, code: str | None = None):
    def match(e: ET.Element) -> bool:
        return (e.tag == q(CLIENT_NS, "presence") and e.get("from") == frm
                and e.get("type") == ptype and (code is None or code in codes(e)))
    return match


async def join_error(client, room: str, nick: str) -> str:
    """Joins with a raw presence and returns the error condition the room answers."""
    client.send_presence(pto=f"{room}/{nick}")
    err = await client.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("type") == "error"
        and e.get("from") == f"{room}/{nick}", what="join error")
    return stanza_error(err)


async def create_configured(owner, room: str, nick: str, **fields):
    presence, _, _, _ = await owner.plugin["xep_0045"].join_muc_wait(
        room, nick, maxstanzas=0, timeout=10)
    assert {"110", "201"} <= codes(presence.xml), ET.tostring(presence.xml)
    form = await owner.plugin["xep_0045"].get_room_config(room)
    for var, value in fields.items():
        form.field[var]["value"] = value
    await owner.plugin["xep_0045"].set_room_config(room, form)


@async_test(timeout=120)
async def test_members_only_room_lifecycle_and_restart(make_server):
    server = make_server(users=USERS)
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    carol = await muc_login(server, "carol")
    dave = await muc_login(server, "dave")
    await create_configured(alice, ROOM, "al", **{
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_membersonly": True,
        "muc#roomconfig_roomname": "The Lounge",
        "muc#roomconfig_whois": "anyone",
    })
    muc = alice.plugin["xep_0045"]
    for user in ("bob", "carol"):
        await muc.set_affiliation(ROOM, "member", jid=server.jid(user))

    # A non-member is refused; members get in and see each other.
    assert await join_error(dave, ROOM, "dave") == "registration-required"
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", maxstanzas=0, timeout=10)
    await alice.expect(muc_presence(f"{ROOM}/carol"))

    bob.send_message(mto=ROOM, mbody="hello room", mtype="groupchat")
    for c in (alice, carol, bob):
        msg = await c.expect_message("hello room")
        assert msg.get("from") == f"{ROOM}/bob" and msg.get("type") == "groupchat"

    carol.plugin["xep_0045"].set_subject(ROOM, "Plans")
    subject = await bob.expect(
        lambda e: e.findtext(q(CLIENT_NS, "subject")) == "Plans", what="subject")
    assert subject.get("from") == f"{ROOM}/carol"

    # Nick change: 303 with the new nick, then presence from the new nick.
    await bob.plugin["xep_0045"].set_self_nick(ROOM, "robert", timeout=10)
    gone = await alice.expect(muc_presence(f"{ROOM}/bob", "unavailable", "303"))
    assert gone.find(f".//{q(NS_MUC_USER, 'item')}").get("nick") == "robert"
    await alice.expect(muc_presence(f"{ROOM}/robert"))

    # Kick (307) and ban (301); a banned user cannot come back.
    await muc.set_role(ROOM, "carol", "none", reason="calm down")
    await carol.expect(muc_presence(f"{ROOM}/carol", "unavailable", "307"))
    await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", maxstanzas=0, timeout=10)
    await muc.set_affiliation(ROOM, "outcast", jid=server.jid("carol"), reason="enough")
    await carol.expect(muc_presence(f"{ROOM}/carol", "unavailable", "301"))
    await bob.expect(muc_presence(f"{ROOM}/carol", "unavailable", "301"))
    carol.received.clear()
    assert await join_error(carol, ROOM, "carol") == "forbidden"

    # A mediated invitation makes dave a member of the members-only room.
    muc.invite(ROOM, server.jid("dave"), reason="join us")
    invite = await dave.expect(
        lambda e: e.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'invite')}") is not None,
        what="invitation")
    assert invite.get("from") == ROOM
    await dave.plugin["xep_0045"].join_muc_wait(ROOM, "dave", maxstanzas=0, timeout=10)
    for c in (alice, bob, carol, dave):
        await c.close()

    server.restart()
    alice = await muc_login(server, "alice")
    form = await alice.plugin["xep_0045"].get_room_config(ROOM)
    values = form.get_values()
    assert values["muc#roomconfig_persistentroom"] in (True, "1")
    assert values["muc#roomconfig_membersonly"] in (True, "1")
    assert values["muc#roomconfig_roomname"] == "The Lounge"
    members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
    assert {str(j) for j in members} == {server.jid("bob"), server.jid("dave")}
    outcasts = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "outcast")
    assert [str(j) for j in outcasts] == [server.jid("carol")]
    info = await alice.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=ROOM)
    features = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
    assert {"muc_persistent", "muc_membersonly", "muc_nonanonymous"} <= features
    items = await alice.iq("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=MUC)
    assert [(i.get("jid"), i.get("name")) for i in items.iter(q(NS_DISCO_ITEMS, "item"))] == [
        (ROOM, "The Lounge")]
    _, subject, _, _ = await alice.plugin["xep_0045"].join_muc_wait(
        ROOM, "al", maxstanzas=0, timeout=10)
    assert subject["subject"] == "Plans"
    carol = await muc_login(server, "carol")
    assert await join_error(carol, ROOM, "carol") == "forbidden"
    bob = await muc_login(server, "bob")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "robert", maxstanzas=0, timeout=10)


@async_test(timeout=60)
async def test_history_private_messages_and_self_ping(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al")
    for i in range(4):
        alice.send_message(mto=ROOM, mbody=f"m{i}", mtype="groupchat")
        await alice.expect_message(f"m{i}")
    _, _, _, history = await bob.plugin["xep_0045"].join_muc_wait(
        ROOM, "bob", maxstanzas=2, timeout=10)
    assert [m["body"] for m in history] == ["m2", "m3"]
    assert all(m["delay"]["stamp"] is not None for m in history)

    # A second session of bob joins under the same nick and hears the room too.
    bob2 = await muc_login(server, "bob", resource="phone")
    await bob2.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    alice.send_message(mto=f"{ROOM}/bob", mbody="psst", mtype="chat")
    for c in (bob, bob2):
        pm = await c.expect_message("psst")
        assert pm.get("from") == f"{ROOM}/al"

    # Self-ping (XEP-0410) is answered by the room; outsiders are told they are not in.
    pong = await bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/bob")
    assert pong.get("type") == "result", ET.tostring(pong)
    carol = await muc_login(server, "carol")
    pong = await carol.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=f"{ROOM}/bob")
    assert stanza_error(pong) == "not-acceptable"
    carol.send_message(mto=ROOM, mbody="let me in", mtype="groupchat")
    err = await carol.expect(lambda e: e.get("type") == "error", what="error")
    assert stanza_error(err) == "not-acceptable"

    # A malformed admin request gets an error; the room keeps working for everyone.
    reply = await alice.iq("set", "<query xmlns='http://jabber.org/protocol/muc#admin'>"
                                  "<item role='emperor' nick='bob'/></query>", to=ROOM)
    assert stanza_error(reply) == "bad-request"
    alice.send_message(mto=ROOM, mbody="still here", mtype="groupchat")
    await bob.expect_message("still here")

    # Destroying the room tells everyone where to go.
    await alice.plugin["xep_0045"].destroy(ROOM, reason="moving", altroom=f"new@{MUC}")
    gone = await bob.expect(muc_presence(f"{ROOM}/bob", "unavailable"))
    destroy = gone.find(f".//{q(NS_MUC_USER, 'destroy')}")
    assert destroy is not None and destroy.get("jid") == f"new@{MUC}"


@async_test(timeout=60)
async def test_room_creation_can_be_limited_to_admins(make_server):
    server = make_server(server={"admins": ["alice@localhost"]}, muc={"creation": "admins"})
    bob = await muc_login(server, "bob")
    assert await join_error(bob, f"bobs@{MUC}", "bob") == "not-allowed"
    alice = await muc_login(server, "alice")
    await create_configured(alice, f"staff@{MUC}", "al")
    bob.received.clear()
    await bob.plugin["xep_0045"].join_muc_wait(f"staff@{MUC}", "bob", maxstanzas=0, timeout=10)


@async_test(timeout=60)
async def test_rooms_per_user_and_locked_rooms(make_server):
    server = make_server(muc={"max_rooms_per_user": 1})
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await alice.plugin["xep_0045"].join_muc_wait(f"one@{MUC}", "al", maxstanzas=0, timeout=10)
    # Not configured yet: nobody else may enter.
    assert await join_error(bob, f"one@{MUC}", "bob") == "item-not-found"
    assert await join_error(alice, f"two@{MUC}", "al") == "resource-constraint"
    try:
        await bob.plugin["xep_0045"].get_room_config(f"one@{MUC}")
        raise AssertionError("a non-owner read the configuration")
    except IqError as e:
        assert e.condition == "forbidden"


RETRACT = "urn:xmpp:message-retract:1"
MODERATE = "urn:xmpp:message-moderate:1"


def say_with_id(client, text: str, msg_id: str, retract: str | None = None) -> None:
    msg = client.make_message(mto=ROOM, mbody=text, mtype="groupchat")
    msg["id"] = msg_id
    if retract:
        msg.xml.append(ET.fromstring(f"<retract xmlns='{RETRACT}' id='{retract}'/>"))
    msg.send()


@async_test(timeout=60)
async def test_retracted_and_moderated_messages_leave_the_history_in_memory(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    for text, msg_id in [("oops", "b-1"), ("keep", "b-2"), ("spam", "b-3")]:
        say_with_id(bob, text, msg_id)
        await alice.expect_message(text)
    info = await bob.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=ROOM)
    assert MODERATE in {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}

    # Only its author retracts a message (XEP-0424 §6); a moderator moderates any.
    say_with_id(alice, "not yours", "a-1", retract="b-1")
    err = await alice.expect(lambda e: e.get("type") == "error", what="the refusal")
    assert stanza_error(err) == "forbidden"
    say_with_id(bob, "retracted", "b-4", retract="b-1")
    await alice.expect_message("retracted")
    reply = await alice.iq("set", f"<moderate xmlns='{MODERATE}' id='b-3'>"
                                  f"<retract xmlns='{RETRACT}'/></moderate>", to=ROOM)
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    reply = await alice.iq("set", f"<moderate xmlns='{MODERATE}' id='nope'>"
                                  f"<retract xmlns='{RETRACT}'/></moderate>", to=ROOM)
    assert stanza_error(reply) == "item-not-found"

    carol = await muc_login(server, "carol")
    _, _, _, history = await carol.plugin["xep_0045"].join_muc_wait(
        ROOM, "carol", maxstanzas=20, timeout=10)
    kept = [m["body"] for m in history if m.xml.find(q(RETRACT, "retract")) is None]
    assert kept == ["keep"], [m["body"] for m in history]
