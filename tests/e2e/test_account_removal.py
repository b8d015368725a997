"""Removing an account leaves no footprint: in-band (XEP-0077) or with ``xmppd unregister``
(server running or stopped), its contacts are told (unsubscribe, unsubscribed, a roster push),
their roster items lose the subscription, pending requests from it go, its chat room
affiliations go (server administrators manage a room left without owner), and its name cannot
be registered again during ``registration.tombstone_days``."""

from __future__ import annotations

import asyncio

from clients import ROSTER_NS, async_test, login, q
from conftest import PASSWORD
from test_muc import MUC, codes
from test_register import register_with_slixmpp
from test_roster_presence import is_presence_from, mutual

ROOM = f"den@{MUC}"
A, B, C = "alice@localhost", "bob@localhost", "carol@localhost"


async def muc_client(server, user: str, **kw):
    client = await login(server, user, **kw)
    client.register_plugin("xep_0045")
    client.register_plugin("xep_0004")
    client.register_plugin("xep_0077")
    return client


async def footprint(server):
    """alice and bob are mutual contacts, alice has asked carol for a subscription that carol
    has not answered yet, and alice owns the persistent room ROOM where bob is an admin.
    Returns the clients of alice, bob and carol."""
    alice = await muc_client(server, "alice")
    bob = await muc_client(server, "bob")
    carol = await muc_client(server, "carol")
    await mutual(alice, bob)
    alice.send_presence(pto=C, ptype="subscribe")
    await carol.expect_presence(A, "subscribe")
    presence, _, _, _ = await alice.plugin["xep_0045"].join_muc_wait(
        ROOM, "al", maxstanzas=0, timeout=10)
    assert {"110", "201"} <= codes(presence.xml)
    muc = alice.plugin["xep_0045"]
    form = await muc.get_room_config(ROOM)
    form.field["muc#roomconfig_persistentroom"]["value"] = True
    await muc.set_room_config(ROOM, form)
    await muc.set_affiliation(ROOM, "admin", jid=B)
    for client in (alice, bob, carol):
        client.received.clear()
    return alice, bob, carol


async def affiliation_list(client, affiliation: str) -> set[str]:
    jids = await client.plugin["xep_0045"].get_affiliation_list(ROOM, affiliation)
    return {str(j) for j in jids}


async def expect_contact_lost(bob) -> None:
    """What bob sees when his mutual contact alice is removed."""
    item = await bob.expect_roster_push(A)
    assert item.get("subscription") == "none" and item.get("ask") is None, item.attrib
    await bob.expect_presence(A, "unsubscribe")
    await bob.expect_presence(A, "unsubscribed")
    await bob.expect_presence(A, "unavailable")


async def wait_for_stream_end(client) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while client.transport is not None and not client.stream_errors:
        assert loop.time() < deadline, "the removed account's session was not ended"
        await asyncio.sleep(0.05)


async def roster_items(client) -> dict[str, dict]:
    reply = await client.iq("get", f"<query xmlns='{ROSTER_NS}'/>")
    return {i.get("jid"): dict(i.attrib)
            for i in reply.iter(q(ROSTER_NS, "item"))}


@async_test(timeout=120)
async def test_in_band_removal_tells_contacts_and_keeps_the_name(make_server):
    server = make_server(registration={"hosts": ["localhost"]}, server={"admins": [C]})
    alice, bob, carol = await footprint(server)
    await alice.plugin["xep_0077"].cancel_registration(jid=server.domain)
    await wait_for_stream_end(alice)
    await expect_contact_lost(bob)
    assert (await roster_items(bob))[A]["subscription"] == "none"

    # The room keeps working without alice's affiliation; a server administrator manages it.
    assert await affiliation_list(bob, "owner") == set()
    assert await affiliation_list(bob, "admin") == {B}
    form = await carol.plugin["xep_0045"].get_room_config(ROOM)
    assert form.get_values()["muc#roomconfig_persistentroom"] in (True, "1")
    assert await affiliation_list(carol, "owner") == {C}

    # The name is kept: in-band and on the command line.
    assert await register_with_slixmpp(server, "alice", PASSWORD) == "conflict"
    result = server.cli("register", "alice", "localhost", PASSWORD, check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "removed" in lines[0] and "--ignore-tombstone" in lines[0], lines

    # carol's pending request from alice is gone: a new session of hers is not asked again.
    await carol.close()
    carol = await login(server, "carol")
    assert not [e for e in carol.received if is_presence_from(A, "subscribe")(e)]
    assert A not in await roster_items(carol)


@async_test(timeout=120)
async def test_a_new_account_of_a_removed_name_inherits_nothing(make_server):
    server = make_server(registration={"hosts": ["localhost"], "tombstone_days": 0})
    alice, bob, carol = await footprint(server)
    await alice.plugin["xep_0077"].cancel_registration(jid=server.domain)
    await wait_for_stream_end(alice)
    await expect_contact_lost(bob)

    assert await register_with_slixmpp(server, "alice", PASSWORD) == "ok"
    alice = await muc_client(server, "alice")
    assert await roster_items(alice) == {}
    # No presence subscription either way: bob does not see the new alice, she does not see him.
    # (A presence broadcast at her login would reach bob before the answer to this ping.)
    pong = await bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=server.domain)
    assert pong.get("type") == "result"
    assert not [e for e in bob.received if is_presence_from(A)(e)]
    assert not [e for e in alice.received if is_presence_from(B)(e)]
    assert not [e for e in alice.received if e.get("type") == "subscribe"]
    # No affiliation: the new alice does not own the room.
    assert await affiliation_list(bob, "owner") == set()
    reply = await alice.iq(
        "get", "<query xmlns='http://jabber.org/protocol/muc#owner'/>", to=ROOM)
    assert reply.get("type") == "error", reply.attrib


@async_test(timeout=120)
async def test_cli_unregister_while_running_ends_sessions_and_tells_contacts(make_server):
    server = make_server()
    for client in await footprint(server):
        await client.close()
    # After a restart the room is back from storage and idle: nobody has addressed it yet.
    server.restart()
    alice = await login(server, "alice")
    bob = await muc_client(server, "bob")
    bob.received.clear()
    out = server.cli("unregister", "alice", "localhost").stdout
    assert "unregistered alice@localhost" in out, out
    await wait_for_stream_end(alice)
    assert alice.stream_errors == ["not-authorized"], alice.stream_errors
    await expect_contact_lost(bob)
    assert await affiliation_list(bob, "owner") == set()
    refused = server.cli("register", "alice", "localhost", PASSWORD, check=False)
    assert refused.returncode == 1 and "removed" in refused.stderr, refused.stderr
    server.cli("register", "--ignore-tombstone", "alice", "localhost", PASSWORD)
    alice = await login(server, "alice")
    assert await roster_items(alice) == {}


@async_test(timeout=120)
async def test_cli_unregister_with_the_server_stopped(make_server):
    server = make_server(server={"admins": [C]})
    alice, bob, carol = await footprint(server)
    for client in (alice, bob, carol):
        await client.close()
    server.stop()
    out = server.cli("unregister", "alice", "localhost").stdout
    assert "unregistered alice@localhost" in out, out
    server.start()
    bob = await muc_client(server, "bob")
    assert (await roster_items(bob))[A]["subscription"] == "none"
    assert await affiliation_list(bob, "owner") == set()
    carol = await muc_client(server, "carol")
    assert A not in await roster_items(carol)
    assert not [e for e in carol.received if is_presence_from(A, "subscribe")(e)]
    # The room was restored without an owner; a server administrator takes it over.
    await carol.plugin["xep_0045"].get_room_config(ROOM)
    assert await affiliation_list(carol, "owner") == {C}
