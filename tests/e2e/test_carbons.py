"""Message carbons (XEP-0280) through slixmpp's xep_0280 plugin and aioxmpp's carbons: two
clients of one account, each sees the conversations of the other, received and sent; private
messages and ``<no-copy/>`` are not copied; a room's private messages follow the §6.1 rules;
a copy forged by another user is not delivered as one.

That something did not arrive is shown by a marker sent after it: the server keeps one
sender's stanzas to one client in order, so once the marker's copy is there, the other one
would have been too.
"""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET

import aioxmpp
import aioxmpp.connector
import aioxmpp.im.dispatcher

from clients import CLIENT_NS, async_test, login, q, settled
from conftest import PASSWORD
from test_mam import SID, body, query
from test_muc import NS_MUC_USER, create_configured

CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
ROOM = "carbons@conference.localhost"


def with_plugins(client) -> None:
    for plugin in ("xep_0030", "xep_0297", "xep_0280", "xep_0045"):
        client.register_plugin(plugin)


async def carbons_login(server, user: str, resource: str, *, enable: bool = True, **kw):
    client = await login(server, user, resource=resource, setup=with_plugins, **kw)
    client.copies = asyncio.Queue()
    client.add_event_handler("carbon_received", lambda m: client.copies.put_nowait(("received", m)))
    client.add_event_handler("carbon_sent", lambda m: client.copies.put_nowait(("sent", m)))
    if enable:
        await client.plugin["xep_0280"].enable()
    return client


async def next_copy(client, timeout: float = 10.0):
    """The next copy slixmpp accepted as a carbon: ("received" | "sent", the carried message)."""
    kind, msg = await asyncio.wait_for(client.copies.get(), timeout)
    carried = msg[f"carbon_{kind}"]
    return kind, carried


def text(msg) -> str:
    return msg["body"]


@async_test()
async def test_the_other_client_sees_received_and_sent_messages(server):
    pc = await carbons_login(server, "alice", "pc")
    phone = await carbons_login(server, "alice", "phone")
    bob = await login(server, "bob")

    bob.chat("alice@localhost/pc", "to the pc")
    delivered = await pc.expect_message("to the pc")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("received", "to the pc")
    assert carried["from"] == bob.boundjid and carried["to"].full == "alice@localhost/pc"
    # The copy carries the archive's id of the message, the one the pc got.
    copy = await phone.expect(lambda e: e.find(q(CARBONS, "received")) is not None)
    inner = copy.find(f"{q(CARBONS, 'received')}/{q(FORWARD, 'forwarded')}/{q(CLIENT_NS, 'message')}")
    sid = inner.find(q(SID, "stanza-id"))
    assert sid is not None and sid.get("by") == "alice@localhost", ET.tostring(copy)
    assert sid.get("id") == delivered.find(q(SID, "stanza-id")).get("id")
    assert copy.get("from") == "alice@localhost" and copy.get("to") == "alice@localhost/phone"

    pc.chat("bob@localhost", "from the pc")
    await bob.expect_message("from the pc")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("sent", "from the pc")
    assert carried["from"] == pc.boundjid

    # To the bare JID with equal priorities both get the message itself, and no copy.
    bob.chat("alice@localhost", "to both")
    await pc.expect_message("to both")
    await phone.expect_message("to both")
    bob.chat("alice@localhost/pc", "marker")
    await pc.expect_message("marker")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("received", "marker")
    assert not [c for c in pc.received if c.find(q(CARBONS, "received")) is not None]


@async_test()
async def test_disabled_clients_get_no_copies_and_disco_shows_the_feature(server):
    pc = await carbons_login(server, "alice", "pc")
    phone = await carbons_login(server, "alice", "phone")
    bob = await login(server, "bob")
    info = await pc.plugin["xep_0030"].get_info(jid="localhost")
    assert CARBONS in info["disco_info"]["features"]
    assert "urn:xmpp:carbons:rules:0" in info["disco_info"]["features"]

    await phone.plugin["xep_0280"].disable()
    bob.chat("alice@localhost/pc", "while disabled")
    await pc.expect_message("while disabled")
    await phone.plugin["xep_0280"].enable()
    bob.chat("alice@localhost/pc", "enabled again")
    await pc.expect_message("enabled again")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("received", "enabled again")


@async_test()
async def test_private_and_no_copy_messages_are_not_copied(server):
    pc = await carbons_login(server, "alice", "pc")
    phone = await carbons_login(server, "alice", "phone")
    bob = await login(server, "bob")

    hints = (f"<private xmlns='{CARBONS}'/>", "<no-copy xmlns='urn:xmpp:hints'/>")
    for i, hint in enumerate(hints + ("".join(hints),)):
        pc.send_raw(f"<message to='bob@localhost' type='chat'><body>secret {i}</body>{hint}</message>")
        await bob.expect_message(f"secret {i}")
        bob.send_raw(f"<message to='alice@localhost/pc' type='chat'><body>hush {i}</body>{hint}</message>")
        await pc.expect_message(f"hush {i}")
    # Each marker's copy comes after any copy of what its sender sent before; the two come
    # from two senders' sessions, in either order.
    pc.chat("bob@localhost", "sent marker")
    bob.chat("alice@localhost/pc", "received marker")
    await pc.expect_message("received marker")
    copies = {(k, text(c)) for k, c in [await next_copy(phone), await next_copy(phone)]}
    assert copies == {("sent", "sent marker"), ("received", "received marker")}


@async_test(timeout=120)
async def test_room_private_messages_are_copied_when_sent_only(server):
    pc = await carbons_login(server, "alice", "pc")
    phone = await carbons_login(server, "alice", "phone")
    bob = await carbons_login(server, "bob", "x", enable=False)
    await create_configured(pc, ROOM, "al")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)

    # From an occupant: the room gives it to every client joined with that nick; no copy.
    bob.send_raw(f"<message to='{ROOM}/al' type='chat'><body>pm to al</body>"
                 f"<x xmlns='{NS_MUC_USER}'/></message>")
    pm = await pc.expect_message("pm to al")
    assert pm.get("from") == f"{ROOM}/bob"
    # The room's talk: never copied.
    bob.send_message(mto=ROOM, mbody="to the room", mtype="groupchat")
    await pc.expect_message("to the room")
    # To an occupant: copied, so the phone sees what the pc said.
    pc.send_raw(f"<message to='{ROOM}/bob' type='chat'><body>pm to bob</body>"
                f"<x xmlns='{NS_MUC_USER}'/></message>")
    await bob.expect_message("pm to bob")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("sent", "pm to bob")
    bob.chat("alice@localhost/pc", "marker")
    await pc.expect_message("marker")
    kind, carried = await next_copy(phone)
    assert (kind, text(carried)) == ("received", "marker")
    await settled(phone)
    assert not [e for e in phone.received if (e.findtext(q(CLIENT_NS, "body")) or "").startswith("pm")]


@async_test()
async def test_a_copy_forged_by_another_user_is_not_delivered_as_one(server):
    pc = await carbons_login(server, "alice", "pc")
    mallory = await login(server, "bob")
    mallory.send_raw(
        f"<message to='alice@localhost/pc' type='chat'><received xmlns='{CARBONS}'>"
        f"<forwarded xmlns='{FORWARD}'><message xmlns='jabber:client' type='chat' "
        f"from='carol@localhost/x' to='alice@localhost/pc'><body>forged</body></message>"
        f"</forwarded></received><body>plain</body></message>")
    got = await pc.expect_message("plain")
    assert got.find(q(CARBONS, "received")) is None, ET.tostring(got)
    assert got.get("from") == str(mallory.boundjid)
    mallory.chat("alice@localhost/pc", "marker")
    await pc.expect_message("marker")
    assert pc.copies.empty()


@contextlib.asynccontextmanager
async def aioxmpp_carbons(server, user: str, resource: str):
    """An aioxmpp client whose IM dispatcher enables carbons as the stream is established;
    yields it with a queue of (sent, source, body) for each message the dispatcher hands on."""
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(f"{server.jid(user)}/{resource}"),
        aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[("127.0.0.1", server.starttls_port,
                        aioxmpp.connector.STARTTLSConnector())],
    )
    seen: asyncio.Queue = asyncio.Queue()
    dispatcher = client.summon(aioxmpp.im.dispatcher.IMDispatcher)

    def record(message, peer, sent, source):
        seen.put_nowait((sent, source, message.body.any() if message.body else None))
        return message

    dispatcher.message_filter.register(record, 0)
    async with client.connected():
        # The enable IQ was answered before the stream counted as established.
        yield client, seen


@async_test(timeout=120)
async def test_aioxmpp_receives_copies_from_xmppd(server):
    pc = await carbons_login(server, "alice", "pc")
    bob = await login(server, "bob")
    async with aioxmpp_carbons(server, "alice", "aio") as (_, seen):
        bob.chat("alice@localhost/pc", "seen by aioxmpp")
        await pc.expect_message("seen by aioxmpp")
        pc.chat("bob@localhost", "sent by the pc")
        await bob.expect_message("sent by the pc")
        carbons = aioxmpp.im.dispatcher.MessageSource.CARBONS
        got = [await asyncio.wait_for(seen.get(), 10) for _ in range(2)]
        assert got == [(False, carbons, "seen by aioxmpp"), (True, carbons, "sent by the pc")]


@async_test()
async def test_a_sent_copy_carries_the_senders_archive_id(server):
    pc = await carbons_login(server, "alice", "pc")
    phone = await carbons_login(server, "alice", "phone")
    bob = await login(server, "bob")
    pc.chat("bob@localhost", "archived for both")
    delivered = await bob.expect_message("archived for both")
    # Bob sees his own archive's id, not alice's.
    by = [s.get("by") for s in delivered.findall(q(SID, "stanza-id"))]
    assert by == ["bob@localhost"], ET.tostring(delivered)

    copy = await phone.expect(lambda e: e.find(q(CARBONS, "sent")) is not None)
    inner = copy.find(f"{q(CARBONS, 'sent')}/{q(FORWARD, 'forwarded')}/{q(CLIENT_NS, 'message')}")
    sids = inner.findall(q(SID, "stanza-id"))
    assert [s.get("by") for s in sids] == ["alice@localhost"], ET.tostring(copy)
    # The id alice's archive gives the message.
    _, results = await query(phone)
    ids = [rid for rid, m in results if body(m) == "archived for both"]
    assert ids == [sids[0].get("id")], (ids, ET.tostring(copy))
