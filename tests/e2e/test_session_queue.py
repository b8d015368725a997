"""Session queues: what a session's own requests bring back must not cost it the connection,
and what is queued for a session that ends is not lost.

Logging in with a large offline backlog, with many contacts online, or joining a crowded room
queues far more for the session at once than others may queue for it (``c2s.session_queue``):
the session asked for it. The backlog is handed out page by page as the session's writer gets
it out; presence answers and a room's occupant list use the session's reply budget. The
crowded cases lower ``c2s.session_queue`` instead of logging in hundreds of clients.

A session that stops reading is still closed at once by a kick or a shutdown, and the
messages still queued for it go where RFC 6121 §8.5.3.2.1 sends them (here: offline
storage). A raw client plays the stuck client: a real client library cannot be told to shrink
its receive window and stop reading.
"""

from __future__ import annotations

import asyncio
import threading
import time
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, is_message, login, q
from conftest import PASSWORD
from raw import RawClient, StreamClosed, stream_error_condition

MUC = "conference.localhost"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
CROWD = 24
SMALL_QUEUE = {"c2s": {"session_queue": 8}}


def names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:02}" for i in range(n)]


async def still_connected(client) -> None:
    pong = await client.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=client.boundjid.domain)
    assert pong.get("type") == "result"
    assert not client.stream_errors, client.stream_errors


@async_test(timeout=180)
async def test_an_offline_backlog_beyond_the_queue_arrives_whole_and_in_order(server):
    # 800 stored messages; the queue holds 512 and the offline store 1000 (the defaults).
    alice = await login(server, "alice")
    total = 800
    for i in range(total):
        alice.chat("bob@localhost", f"backlog {i:03}")
    # Answered once all 800 were handled: each is archived and stored durably first, one
    # commit after the other for one sender, which takes seconds on a loaded machine.
    pong = await alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost", timeout=120)
    assert pong.get("type") == "result"

    bob = await login(server, "bob", presence=False)
    bob.send_presence()
    bodies = []
    for _ in range(total):
        message = await bob.expect(is_message, what=f"offline message {len(bodies)}")
        bodies.append(message.findtext(q(CLIENT_NS, "body")))
    assert bodies == [f"backlog {i:03}" for i in range(total)]
    await still_connected(bob)

    # Delivered once: everything written was removed from storage.
    await bob.close()
    again = await login(server, "bob")
    await again.expect_none(is_message, 1.0, "an offline message delivered twice")


@async_test(timeout=180)
async def test_a_user_with_many_contacts_online_logs_in_and_stays(make_server):
    hub, contacts = "hub", names("contact", CROWD)
    members = [f"{u}@localhost" for u in (hub, *contacts)]
    server = make_server(users=(hub, *contacts), **SMALL_QUEUE,
                         shared_roster={"group": [{"name": "Everyone", "members": members}]})
    online = [await login(server, c) for c in contacts]

    client = await login(server, hub)
    for c in contacts:
        await client.expect_presence(f"{c}@localhost")
    await still_connected(client)
    for c in online:
        await c.expect_presence(f"{hub}@localhost")


@async_test(timeout=180)
async def test_joining_a_crowded_room_brings_every_occupant(make_server):
    room = f"crowded@{MUC}"
    occupants = names("occupant", CROWD)
    server = make_server(users=("alice", *occupants), **SMALL_QUEUE)
    clients = []
    for user in occupants:
        client = await login(server, user)
        client.register_plugin("xep_0045")
        client.register_plugin("xep_0004")
        muc = client.plugin["xep_0045"]
        await muc.join_muc_wait(room, user, maxstanzas=0, timeout=15)
        if not clients:
            # The creator unlocks the room by accepting the default configuration.
            await muc.set_room_config(room, await muc.get_room_config(room))
        clients.append(client)

    alice = await login(server, "alice")
    alice.send_presence(pto=f"{room}/alice")
    for user in occupants:
        await alice.expect(
            lambda e, user=user: e.tag == q(CLIENT_NS, "presence")
            and e.get("from") == f"{room}/{user}" and e.get("type") is None,
            what=f"presence of {user}")
    own = await alice.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("from") == f"{room}/alice",
        what="own presence")
    assert "110" in {s.get("code") for s in own.iter(q(NS_MUC_USER, "status"))}
    await alice.expect(lambda e: e.find(q(CLIENT_NS, "subject")) is not None, what="subject")
    await still_connected(alice)
    alice.send_message(mto=room, mbody="hello everyone", mtype="groupchat")
    await asyncio.gather(*(c.expect_message("hello everyone") for c in clients))


# --- sessions that stop reading -----------------------------------------------------------

STUCK_BODIES = [f"{i:02} " + "x" * 100_000 for i in range(60)]
# Room for 6 MB in bob's queue (more than the kernel buffers a socket: up to 4 MB on Linux);
# alice unshaped, to send it quickly.
STUCK_CONFIG = {"c2s": {"session_queue_bytes": 16 << 20, "shaper_bytes_per_sec": 0}}


async def stuck_session(server) -> tuple[RawClient, str]:
    """Bob on a slow link that stops reading, with 6 MB queued for him: more than the socket
    buffers hold, less than his queue may hold."""
    bob = RawClient(server.starttls_port, rcvbuf=4096)
    jid = bob.login("bob", PASSWORD, resource="stuck")
    bob.send("<presence/>")
    assert bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost").get("type") == "result"
    alice = await login(server, "alice")
    for body in STUCK_BODIES:
        alice.chat(jid, body)
    await still_connected(alice)  # the server has queued every message for bob
    return bob, jid


def read_until_closed(client: RawClient) -> list[str]:
    """The bodies of the messages that reached the client before its stream ended."""
    bodies = []
    while True:
        try:
            element = client.next_element(timeout=15)
        except (StreamClosed, ET.ParseError):
            # A stanza cut off by the close is not taken: it went back for re-routing.
            return bodies
        if element.tag == q(CLIENT_NS, "message"):
            bodies.append(element.findtext(q(CLIENT_NS, "body")))


async def offline_bodies(server, count: int) -> list[str]:
    bob = await login(server, "bob")
    got = [(await bob.expect(is_message, what="re-routed message")).findtext(
        q(CLIENT_NS, "body")) for _ in range(count)]
    await bob.expect_none(is_message, 1.0, "a message delivered twice")
    return got


@async_test(timeout=120)
async def test_a_kick_ends_a_session_that_does_not_read_and_its_queue_goes_offline(make_server):
    server = make_server(**STUCK_CONFIG)
    bob, jid = await stuck_session(server)
    server.cli("kick", jid)
    # The session ends while bob still reads nothing.
    deadline = time.monotonic() + 20
    while jid in server.cli("sessions").stdout:
        assert time.monotonic() < deadline, "the kicked session is still there"
        await asyncio.sleep(0.1)
    received = read_until_closed(bob)
    rest = await offline_bodies(server, len(STUCK_BODIES) - len(received))
    assert rest, "everything fitted the socket: nothing was left to re-route"
    assert received + rest == STUCK_BODIES


@async_test(timeout=120)
async def test_what_is_queued_at_shutdown_waits_offline(make_server):
    server = make_server(**STUCK_CONFIG)
    bob, _ = await stuck_session(server)
    server.stop()
    received = read_until_closed(bob)
    server.start()
    rest = await offline_bodies(server, len(STUCK_BODIES) - len(received))
    assert rest, "everything fitted the socket: nothing was left to re-route"
    assert received + rest == STUCK_BODIES


# --- flooding -----------------------------------------------------------------------------

SHAPER = {"shaper_bytes_per_sec": 128 * 1024, "shaper_burst_bytes": 256 * 1024}
FLOOD_BODY = "y" * 100_000


def flood_message(to: str, i: int) -> bytes:
    return f"<message to='{to}' type='chat'><body>{i:02} {FLOOD_BODY}</body></message>".encode()


@async_test(timeout=180)
async def test_a_flooding_account_is_shaped_and_cannot_evict_a_reading_session(make_server):
    # Bob reads at a slow link's pace; alice floods him with 6 MB of large messages. Unshaped,
    # that outruns bob's queue (8 stanzas) and socket buffers and evicts him; shaped, alice's
    # data enters the server no faster than the configured rate, which bob keeps up with.
    server = make_server(c2s={"session_queue": 8, **SHAPER})
    bob = RawClient(server.starttls_port, rcvbuf=4096)
    victim = bob.login("bob", PASSWORD, resource="victim")
    alice = RawClient(server.starttls_port)
    alice.login("alice", PASSWORD)
    flood = b"".join(flood_message(victim, i) for i in range(60))

    def send_flood() -> None:
        try:
            alice.sock.sendall(flood)
        except OSError:
            pass  # closed by the test once it has seen enough

    started = time.monotonic()
    sender = threading.Thread(target=send_flood, daemon=True)
    sender.start()
    received = 0
    wanted = 12
    while received < wanted:
        bob.sock.settimeout(30)
        data = bob.sock.recv(32 * 1024)
        assert data, f"bob's connection closed after {received} messages"
        bob.reader.feed(data)
        for element in bob.reader.ready:
            assert stream_error_condition(element) is None, ET.tostring(element)
            received += element.tag == q(CLIENT_NS, "message")
        bob.reader.ready.clear()
        time.sleep(0.025)  # the pace of a slow link: about 1.3 MB/s, ten times the shaper
    elapsed = time.monotonic() - started
    # The server cannot have read 12 messages from alice faster than the shaper allows.
    least = (wanted * len(flood_message(victim, 0)) - SHAPER["shaper_burst_bytes"]) \
        / SHAPER["shaper_bytes_per_sec"]
    assert elapsed >= 0.9 * least, f"{wanted} messages of 100 kB in {elapsed:.1f}s: not shaped"

    alice.close()
    sender.join(10)
    # Bob is still there, and gets what the server had accepted before alice left.
    pong = bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost", timeout=60)
    assert pong.get("type") == "result", ET.tostring(pong)
