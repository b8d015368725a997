"""Room archives (XEP-0313 on XEP-0045 rooms, XEP-0359 stanza ids) through slixmpp's xep_0045
and xep_0313 plugins: every copy of a room message carries the room's archive id; the history a
new occupant gets comes from the archive and survives a restart; the room answers MAM queries,
paging both ways, only to those who may enter, with real JIDs for moderators only in a
semi-anonymous room; a destroyed room's archive is gone."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, q, stanza_error
from test_mam import MAM, SID, bodies, fin, query
from test_muc import MUC, NS_DISCO_INFO, NS_MUC_USER, USERS, create_configured, muc_login

ROOM = f"archived@{MUC}"
ARCHIVED = {"muc#roomconfig_enablearchiving": True, "muc#roomconfig_persistentroom": True}


def room_ids(msg: ET.Element) -> list[str]:
    """The ids the room stamped on a message (its stanza-ids by the room)."""
    return [s.get("id") for s in msg.findall(q(SID, "stanza-id")) if s.get("by") == ROOM]


def real_jids(msg: ET.Element) -> list[str | None]:
    return [i.get("jid") for i in msg.iter(q(NS_MUC_USER, "item"))]


async def mam_muc_login(server, user: str):
    client = await muc_login(server, user)
    client.register_plugin("xep_0313")
    return client


async def archived_room(server):
    """Alice creates the archived room (its owner), bob joins it; returns both and the room's
    disco#info features."""
    alice = await mam_muc_login(server, "alice")
    bob = await mam_muc_login(server, "bob")
    await create_configured(alice, ROOM, "al", **ARCHIVED)
    info = await bob.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=ROOM)
    features = {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=30)
    return alice, bob, features


async def say(sender, listener, text: str) -> ET.Element:
    """Sends a groupchat message to the room; returns the copy ``listener`` got."""
    sender.send_message(mto=ROOM, mbody=text, mtype="groupchat")
    return await listener.expect_message(text)


async def iterate_room(client, *, reverse: bool = False) -> list[tuple[str, str]]:
    """(archive id, body) of the whole room archive through slixmpp's MAM iterator."""
    out = []
    async for msg in client.plugin["xep_0313"].iterate(
            jid=ROOM, rsm={"max": 3}, reverse=reverse):
        out.append((msg["mam_result"]["id"], msg["mam_result"]["forwarded"]["stanza"]["body"]))
    return out


@async_test(timeout=180)
async def test_history_and_archive_survive_a_restart_with_the_live_ids(make_server):
    server = make_server(users=USERS)
    alice, bob, features = await archived_room(server)
    assert {MAM, SID} <= features, features

    # A stanza-id claiming the room's archive is the sender's forgery: replaced by the room's.
    bob.send_raw(f"<message to='{ROOM}' type='groupchat'><body>m0</body>"
                 f"<stanza-id xmlns='{SID}' by='{ROOM}' id='forged'/></message>")
    live = [await alice.expect_message("m0")]
    for i in range(1, 7):
        live.append(await say(bob, alice, f"m{i}"))
    ids = []
    for msg in live:
        [sid] = room_ids(msg)
        assert sid != "forged", ET.tostring(msg, "unicode")
        ids.append(sid)
    assert len(set(ids)) == 7
    texts = [f"m{i}" for i in range(7)]
    for c in (alice, bob):
        await c.close()

    server.restart()
    carol = await mam_muc_login(server, "carol")
    _, _, _, history = await carol.plugin["xep_0045"].join_muc_wait(
        ROOM, "carol", maxstanzas=3, timeout=30)
    assert [m["body"] for m in history] == texts[-3:]
    assert [room_ids(m.xml)[0] for m in history] == ids[-3:], "the ids of the live copies"

    # MAM on the room, three at a time, forward and backward through slixmpp's RSM iterator.
    assert await iterate_room(carol) == list(zip(ids, texts))
    assert await iterate_room(carol, reverse=True) == list(reversed(list(zip(ids, texts))))
    # Full text and the occupant JID as 'with', reused from the accounts' archive.
    reply, results = await query(carol, to=ROOM, fields={"fulltext": "m3"})
    assert reply.get("type") == "result" and bodies(results) == ["m3"]
    reply, results = await query(carol, to=ROOM, fields={"with": f"{ROOM}/bob"},
                                 rsm="<max>2</max><before/>")
    assert [i for i, _ in results] == ids[-2:]
    assert fin(reply).get("complete") in (None, "false")


@async_test(timeout=120)
async def test_members_only_archive_is_forbidden_to_outsiders(make_server):
    server = make_server(users=USERS)
    alice = await mam_muc_login(server, "alice")
    bob = await mam_muc_login(server, "bob")
    dave = await mam_muc_login(server, "dave")
    await create_configured(alice, ROOM, "al", **ARCHIVED,
                            **{"muc#roomconfig_membersonly": True})
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid=server.jid("bob"))
    await say(alice, alice, "members only")

    reply, results = await query(dave, to=ROOM)
    assert stanza_error(reply) == "forbidden" and results == [], ET.tostring(reply, "unicode")
    reply, results = await query(bob, to=ROOM)
    assert reply.get("type") == "result" and bodies(results) == ["members only"]


@async_test(timeout=120)
async def test_real_jids_only_to_moderators_in_a_semi_anonymous_room(make_server):
    server = make_server(users=USERS)
    alice = await mam_muc_login(server, "alice")
    bob = await mam_muc_login(server, "bob")
    carol = await mam_muc_login(server, "carol")
    await create_configured(alice, ROOM, "al", **ARCHIVED)
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=30)
    await carol.plugin["xep_0045"].join_muc_wait(ROOM, "carol", maxstanzas=0, timeout=30)
    # What the sender writes about itself is not what the archive shows.
    bob.send_raw(f"<message to='{ROOM}' type='groupchat'><body>who am i</body>"
                 f"<x xmlns='{NS_MUC_USER}'><item jid='ceo@localhost'/></x></message>")
    await carol.expect_message("who am i")

    _, results = await query(alice, to=ROOM)
    [(_, msg)] = results
    assert msg.get("from") == f"{ROOM}/bob"
    assert real_jids(msg) == [server.jid("bob")], ET.tostring(msg, "unicode")
    _, results = await query(carol, to=ROOM)
    [(_, msg)] = results
    assert msg.get("from") == f"{ROOM}/bob"
    assert real_jids(msg) == [], ET.tostring(msg, "unicode")


@async_test(timeout=120)
async def test_a_destroyed_rooms_archive_is_gone(make_server):
    server = make_server(users=USERS)
    alice = await mam_muc_login(server, "alice")
    await create_configured(alice, ROOM, "al", **ARCHIVED)
    await say(alice, alice, "soon gone")
    db = server.config["storage"]["sqlite_path"]

    def stored() -> int:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
            return c.execute("SELECT COUNT(*) FROM mam_messages WHERE owner = ?",
                             (ROOM,)).fetchone()[0]

    assert stored() == 1
    await alice.plugin["xep_0045"].destroy(ROOM, reason="done")
    assert stored() == 0
    # A new room of the same name starts with an empty archive.
    await create_configured(alice, ROOM, "al", **ARCHIVED)
    reply, results = await query(alice, to=ROOM)
    assert reply.get("type") == "result" and results == []
    assert fin(reply).get("complete") == "true"


RETRACT = "urn:xmpp:message-retract:1"


def has_retract(e: ET.Element, msg_id: str) -> bool:
    return (e.tag == q(CLIENT_NS, "message") and e.get("id") == msg_id
            and e.find(q(RETRACT, "retract")) is not None)


def retract(client, archive_id: str, msg_id: str) -> None:
    """A groupchat retraction (XEP-0424) of the room message with ``archive_id``."""
    client.send_raw(f"<message to='{ROOM}' type='groupchat' id='{msg_id}'>"
                    f"<retract xmlns='{RETRACT}' id='{archive_id}'/></message>")


@async_test(timeout=120)
async def test_only_the_author_retracts_a_room_message_into_a_tombstone(make_server):
    server = make_server(users=USERS)
    alice, bob, features = await archived_room(server)
    assert {RETRACT, RETRACT + "#tombstone"} <= features, features
    [wrong] = room_ids(await say(bob, alice, "wrong room"))
    await say(bob, alice, "right room")

    # Not hers: refused to alice, and neither broadcast nor applied.
    retract(alice, wrong, "by-alice")
    refused = await alice.expect(
        lambda e: e.get("id") == "by-alice" and e.get("type") == "error", what="the refusal")
    assert stanza_error(refused) == "forbidden", ET.tostring(refused, "unicode")
    retract(bob, wrong, "by-bob")
    await alice.expect(lambda e: has_retract(e, "by-bob"), what="bob's retraction")
    # The room sends in order: alice's refused retraction would have come before bob's.
    assert not [e for e in alice.received + bob.received if has_retract(e, "by-alice")]

    reply, results = await query(alice, to=ROOM)
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    (first, tomb), (_, kept), (_, retraction) = results
    assert first == wrong, "the tombstone keeps the archive id"
    assert tomb.find(q(CLIENT_NS, "body")) is None, ET.tostring(tomb, "unicode")
    gone = tomb.find(q(RETRACT, "retracted"))
    assert gone is not None, ET.tostring(tomb, "unicode")
    assert gone.get("id") == "by-bob" and gone.get("by") == f"{ROOM}/bob"
    assert kept.findtext(q(CLIENT_NS, "body")) == "right room"
    assert retraction.find(q(RETRACT, "retract")).get("id") == wrong
    _, found = await query(alice, to=ROOM, fields={"fulltext": "wrong"})
    assert found == [], "full text no longer finds the retracted body"


MODERATE = "urn:xmpp:message-moderate:1"
FALLBACK = "urn:xmpp:fallback:0"


async def moderate(client, archive_id: str, reason: str) -> ET.Element:
    """A moderation request (XEP-0425) for the room message with ``archive_id``; the reply."""
    return await client.iq("set", f"<moderate xmlns='{MODERATE}' id='{archive_id}'>"
                                  f"<retract xmlns='{RETRACT}'/><reason>{reason}</reason>"
                                  "</moderate>", to=ROOM)


@async_test(timeout=120)
async def test_a_moderator_retracts_any_message_and_a_participant_may_not(make_server):
    server = make_server(users=USERS)
    alice, bob, features = await archived_room(server)
    assert MODERATE in features, features
    [spam] = room_ids(await say(bob, alice, "buy now"))

    reply = await moderate(bob, spam, "mine")
    assert stanza_error(reply) == "forbidden", ET.tostring(reply, "unicode")
    reply = await moderate(alice, "424242", "gone")
    assert stanza_error(reply) == "item-not-found", ET.tostring(reply, "unicode")
    reply = await moderate(alice, spam, "spam")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    for client in (alice, bob):
        got = await client.expect(
            lambda e: e.get("from") == ROOM and e.find(q(RETRACT, "retract")) is not None,
            what="the moderation")
        retract_el = got.find(q(RETRACT, "retract"))
        assert retract_el.get("id") == spam
        assert retract_el.find(q(MODERATE, "moderated")).get("by") == f"{ROOM}/al"
        assert retract_el.findtext(q(RETRACT, "reason")) == "spam"
        # Clients without retraction show a body that says what happened (XEP-0428).
        assert got.findtext(q(CLIENT_NS, "body")) == "This message has been moderated: spam"
        fallbacks = {f.get("for") for f in got.findall(q(FALLBACK, "fallback"))}
        assert RETRACT in fallbacks and MODERATE in fallbacks, ET.tostring(got, "unicode")
        # Only the accepted request was announced.
        assert not [e for e in client.received if e.find(q(RETRACT, "retract")) is not None]

    _, results = await query(bob, to=ROOM)
    (first, tomb), (_, announced) = results
    assert first == spam and tomb.find(q(CLIENT_NS, "body")) is None, ET.tostring(tomb, "unicode")
    gone = tomb.find(q(RETRACT, "retracted"))
    assert gone.find(q(MODERATE, "moderated")).get("by") == f"{ROOM}/al"
    assert gone.findtext(q(RETRACT, "reason")) == "spam"
    assert announced.find(q(RETRACT, "retract")).get("id") == spam


OCCUPANT_ID = "urn:xmpp:occupant-id:0"


def occupant_ids(e: ET.Element) -> list[str]:
    return [o.get("id") for o in e.findall(q(OCCUPANT_ID, "occupant-id"))]


@async_test(timeout=120)
async def test_occupant_ids_follow_the_user_across_nicks_and_into_the_archive(make_server):
    server = make_server(users=USERS)
    alice, bob, features = await archived_room(server)
    assert OCCUPANT_ID in features, features
    # A client's own occupant id is not believed (XEP-0421 §4).
    msg = bob.make_message(mto=ROOM, mbody="first", mtype="groupchat")
    msg.xml.append(ET.fromstring(f"<occupant-id xmlns='{OCCUPANT_ID}' id='forged'/>"))
    msg.send()
    [bob_id] = occupant_ids(await alice.expect_message("first"))
    assert bob_id != "forged" and "bob" not in bob_id

    bob.send_presence(pto=f"{ROOM}/robert")
    renamed = await alice.expect(
        lambda e: e.get("from") == f"{ROOM}/robert" and e.get("type") is None,
        what="bob's presence under his new nick")
    assert occupant_ids(renamed) == [bob_id]
    assert occupant_ids(await say(bob, alice, "second")) == [bob_id]

    _, results = await query(alice, to=ROOM)
    assert [occupant_ids(m) for _, m in results] == [[bob_id], [bob_id]]
    assert [m.get("from") for _, m in results] == [f"{ROOM}/bob", f"{ROOM}/robert"]
