"""Two xmppd processes (node-a and node-b, on ports of their own) sharing one PostgreSQL
database: everything but session routing stays correct across them (docs/STORAGE.md,
"Several processes on one database"). A password changed through one is the one the other
checks; a roster changed through one is the one the other serves; an offline message for an
account that comes online on both at once is delivered once; a chat room is hosted by one
process at a time, refused by the other (``<service-unavailable/>`` of type ``wait``), and
taken over once its host stops."""

import asyncio

from clients import CLIENT_NS, async_test, can_login, login, q, stanza_error
from conftest import PASSWORD as XMPP_PASSWORD
from postgres_fixture import PASSWORD, postgres  # noqa: F401
from test_muc import create_configured, muc_login

MUC = "conference.localhost"
ROOM = f"shared@{MUC}"
NEW_PASSWORD = "changed through node-a"


def two_nodes(make_server, pg):
    storage = {"backend": "postgres", "url": pg.url}
    a = make_server(storage=storage, server={"node_name": "node-a"})
    # The accounts are in the database already: node-b registers nobody.
    b = make_server(users=(), storage=storage, server={"node_name": "node-b"})
    return a, b


@async_test(timeout=120)
async def test_accounts_rosters_and_offline_messages_are_shared(
        make_server, postgres, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    a, b = two_nodes(make_server, postgres)

    # A password changed in band through node-a is what node-b checks at the next login.
    alice = await login(a, "alice")
    alice.register_plugin("xep_0077")
    await alice.plugin["xep_0077"].change_password(NEW_PASSWORD, jid=a.domain)
    assert await can_login(b, "alice", NEW_PASSWORD)
    assert not await can_login(b, "alice", XMPP_PASSWORD)

    # A roster item added through node-a is served by node-b.
    await alice.update_roster("bob@localhost", name="Bobby", groups=["friends"])
    alice_b = await login(b, "alice", password=NEW_PASSWORD)
    item = alice_b.client_roster["bob@localhost"]
    assert (item["name"], item["groups"]) == ("Bobby", ["friends"])
    await alice_b.close()

    # Messages for bob, offline, are stored; bob then comes online on both nodes at once.
    bodies = [f"offline {i}" for i in range(20)]
    for body in bodies:
        alice.chat("bob@localhost", body)
    await alice.close()
    deadline = asyncio.get_running_loop().time() + 15
    while postgres.psql("SELECT count(*) FROM offline").strip() != str(len(bodies)):
        assert asyncio.get_running_loop().time() < deadline, "the messages were not stored"
        await asyncio.sleep(0.1)
    bob_a, bob_b = await asyncio.gather(
        login(a, "bob", resource="on-a"), login(b, "bob", resource="on-b"))
    # Each message reaches one of the two sessions, and only one.
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(got) < len(bodies):
        assert asyncio.get_running_loop().time() < deadline, f"only {sorted(got)} arrived"
        for client in (bob_a, bob_b):
            for e in list(client.received):
                body = e.findtext(q(CLIENT_NS, "body"))
                if e.tag == q(CLIENT_NS, "message") and body in bodies:
                    client.received.remove(e)
                    got.append(body)
        await asyncio.sleep(0.05)
    assert sorted(got) == sorted(bodies), got
    assert postgres.psql("SELECT count(*) FROM offline").strip() == "0"
    # Nothing comes twice (a second copy would follow the first within this time).
    for client in (bob_a, bob_b):
        await client.expect_none(
            lambda e: e.tag == q(CLIENT_NS, "message")
            and e.findtext(q(CLIENT_NS, "body")) in bodies, what="a second copy")
    for client in (bob_a, bob_b):
        await client.close()


@async_test(timeout=120)
async def test_a_room_is_hosted_by_one_process_and_taken_over_when_it_stops(
        make_server, postgres, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    a, b = two_nodes(make_server, postgres)
    alice = await muc_login(a, "alice")
    await create_configured(alice, ROOM, "al", **{
        "muc#roomconfig_persistentroom": True,
        "muc#roomconfig_roomname": "Shared",
    })
    assert postgres.psql(
        "SELECT node FROM muc_leases WHERE name = 'shared' AND expires_ms > 0").strip() == "node-a"

    # node-b refuses the room while node-a hosts it: a join and a message alike.
    bob = await muc_login(b, "bob")
    bob.send_presence(pto=f"{ROOM}/bob")
    refused = await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("type") == "error"
        and e.get("from") == f"{ROOM}/bob", what="the refused join")
    assert stanza_error(refused) == "service-unavailable"
    assert refused.find(q(CLIENT_NS, "error")).get("type") == "wait"
    bob.send_message(mto=ROOM, mbody="through node-b", mtype="groupchat")
    bounced = await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.get("type") == "error",
        what="the refused message")
    assert stanza_error(bounced) == "service-unavailable"

    # node-a stops (and gives its rooms up): node-b takes the room over, as stored.
    await alice.close()
    a.stop()
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        bob.received.clear()
        bob.send_presence(pto=f"{ROOM}/bob")
        answer = await bob.expect(
            lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("from") == f"{ROOM}/bob",
            what="an answer to the join")
        if answer.get("type") != "error":
            break
        assert stanza_error(answer) == "service-unavailable"
        assert asyncio.get_running_loop().time() < deadline, "node-b never took the room"
        await asyncio.sleep(0.2)
    info = await bob.iq("get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=ROOM)
    identity = info.find(".//{http://jabber.org/protocol/disco#info}identity")
    assert identity is not None and identity.get("name") == "Shared"
    assert postgres.psql(
        "SELECT node FROM muc_leases WHERE name = 'shared'").strip() == "node-b"
    await bob.close()
