"""Stream management (XEP-0198) with slixmpp's xep_0198 plugin, and the server's liveness
check (XEP-0199): a client whose connection is cut mid-conversation (the socket closed without
a closing tag, or a half-open connection whose client stopped reading and answering) resumes on
a new connection and gets every message exactly once, in order; a session nobody resumes ends
and its messages wait in offline storage; a bogus id is refused with ``<failed/>``.

The server's timeouts are short in these servers' configurations; the tests wait for what the
server logs or the clients see, with generous deadlines only as a safety net."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from clients import CLIENT_NS, Client, async_test, is_message, login, q, settled
from conftest import PASSWORD
from test_mam import query as mam_query
from raw import SASL_NS, STREAM_NS, RawClient, stream_error_condition

SM = "urn:xmpp:sm:3"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SAFETY = 30.0  # seconds: what a single awaited event may take on a loaded machine


async def until(condition, what: str, timeout: float = SAFETY) -> None:
    """Waits until ``condition()`` holds, checking often; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def logged(server, text: str, since: int, count: int = 1) -> None:
    """Waits until the server logged ``text`` ``count`` times after line ``since``."""
    await until(lambda: server.output(since).count(text) >= count, f"server log {text!r}")


def with_sm(client) -> None:
    """Registers slixmpp's stream management plugin, and records what it is told."""
    client.register_plugin("xep_0198")
    client.sm_events = []
    for event in ("sm_enabled", "session_resumed", "sm_failed"):
        client.add_event_handler(event, lambda s, e=event: client.sm_events.append((e, s)))


def bodies(client) -> list[str]:
    return [e.findtext(q(CLIENT_NS, "body")) for e in client.received if is_message(e)]


async def sm_login(server, user: str, resource: str = "phone"):
    client = await login(server, user, resource=resource, setup=with_sm)
    plugin = client.plugin["xep_0198"]
    await until(lambda: plugin.sm_id is not None, "stream management enabled")
    return client


async def reconnect_and_resume(server, client) -> None:
    """Connects ``client`` again; it resumes its stream (XEP-0198 §5)."""
    client.sm_events.clear()
    client.connect("127.0.0.1", server.starttls_port)
    await until(lambda: client.sm_events, "an answer to <resume/>")
    event, stanza = client.sm_events[0]
    assert event == "session_resumed", ET.tostring(stanza.xml)


async def exchange(server, alice, bob, expected: list[str]) -> None:
    """Alice sends a last message; once bob has it, bob has everything before it, and must
    have got each of ``expected`` (then the last one) once, in order."""
    alice.chat(str(bob.boundjid), "last")
    await bob.expect_message("last", timeout=SAFETY)
    seen = bodies(bob)
    assert seen == expected, seen


@async_test(timeout=180.0)
async def test_resumes_after_the_socket_closed_without_a_closing_tag(make_server):
    server = make_server(c2s={"resume_timeout_secs": 600})
    alice = await login(server, "alice")
    bob = await sm_login(server, "bob")
    for i in range(3):
        alice.chat(str(bob.boundjid), f"before {i}")
    await until(lambda: len(bodies(bob)) == 3, "the first messages")

    since = server.line_count()
    bob.kill()
    await logged(server, "session detached from its connection", since)
    for i in range(3):
        alice.chat(str(bob.boundjid), f"meanwhile {i}")
    alice.chat(server.jid("bob"), "to the bare jid")
    await settled(alice)
    # Kept for resumption: still available, nothing bounced or stored.
    assert not [e for e in alice.received if e.get("type") == "error"]

    await reconnect_and_resume(server, bob)
    want = [f"before {i}" for i in range(3)] + [f"meanwhile {i}" for i in range(3)]
    await exchange(server, alice, bob, want + ["to the bare jid"])
    assert "bob@localhost/phone" in str(bob.boundjid)


@async_test(timeout=180.0)
async def test_a_half_open_connection_is_found_and_the_session_resumed(make_server):
    # The client stops reading and answering: the server asks (an <r/>) after two quiet
    # seconds and gives up ten seconds later (the clients that do answer have that long on a
    # loaded machine). What it wrote meanwhile was never handled and is written again on
    # resumption.
    server = make_server(c2s={"resume_timeout_secs": 600, "ping_interval_secs": 2,
                              "ping_timeout_secs": 10})
    alice = await login(server, "alice")
    bob = await sm_login(server, "bob")
    alice.chat(str(bob.boundjid), "before")
    await until(lambda: bodies(bob) == ["before"], "the first message")

    since = server.line_count()
    bob.transport.pause_reading()
    for i in range(5):
        alice.chat(str(bob.boundjid), f"unread {i}")
    await settled(alice)
    await logged(server, "no answer to the liveness check", since)
    await logged(server, "session detached from its connection", since)
    alice.chat(str(bob.boundjid), "while parked")
    await settled(alice)

    bob.kill()
    await reconnect_and_resume(server, bob)
    want = ["before"] + [f"unread {i}" for i in range(5)] + ["while parked"]
    await exchange(server, alice, bob, want)


@async_test(timeout=180.0)
async def test_a_resume_takes_over_a_connection_the_server_thinks_alive(make_server):
    server = make_server(c2s={"resume_timeout_secs": 600})
    alice = await login(server, "alice")
    old = await sm_login(server, "bob")
    alice.chat(str(old.boundjid), "read")
    await until(lambda: bodies(old) == ["read"], "the first message")
    old.transport.pause_reading()
    for i in range(3):
        alice.chat(str(old.boundjid), f"unread {i}")
    await settled(alice)

    # The client knows first that its connection is dead: it resumes on a new one while the
    # old one is still open and the server noticed nothing. The old connection is closed,
    # the session moves to the new one.
    state = old.plugin["xep_0198"]

    def same_stream(client) -> None:
        with_sm(client)
        plugin = client.plugin["xep_0198"]
        plugin.sm_id, plugin.handled = state.sm_id, state.handled
        plugin.seq, plugin.last_ack = state.seq, state.last_ack

    since = server.line_count()
    new = Client(str(old.boundjid), PASSWORD)
    new.enable_starttls, new.enable_plaintext = True, False
    same_stream(new)
    await reconnect_and_resume(server, new)
    await logged(server, "session taken over by a resumption", since)
    await exchange(server, alice, new, [f"unread {i}" for i in range(3)])


@async_test(timeout=180.0)
async def test_a_session_not_resumed_in_time_leaves_its_messages_offline(make_server):
    server = make_server(c2s={"resume_timeout_secs": 2})
    alice = await login(server, "alice")
    bob = await sm_login(server, "bob")
    old_id = bob.plugin["xep_0198"].sm_id
    bob.transport.pause_reading()
    alice.chat(str(bob.boundjid), "unacknowledged")
    await settled(alice)

    since = server.line_count()
    bob.kill()
    await logged(server, "session detached from its connection", since)
    alice.chat(str(bob.boundjid), "while parked")
    await settled(alice)
    await logged(server, "detached session not resumed: ending it", since)
    await logged(server, "session closed", since)

    # Too late: the id is refused, with the count of what the server had handled.
    def late_resume(client) -> None:
        with_sm(client)
        client.plugin["xep_0198"].sm_id = old_id

    again = await login(server, "bob", resource="phone", setup=late_resume, presence=False)
    await until(lambda: again.sm_events, "an answer to <resume/>")
    event, failed = again.sm_events[0]
    assert event == "sm_failed", ET.tostring(failed.xml)
    assert failed.xml.find(q(STANZAS, "item-not-found")) is not None, ET.tostring(failed.xml)
    assert failed.xml.get("h") is not None, ET.tostring(failed.xml)
    await again.close()

    # A plain login gets both from offline storage, once each, in order.
    fresh = await login(server, "bob")
    await fresh.expect_message("unacknowledged", timeout=SAFETY)
    await fresh.expect_message("while parked", timeout=SAFETY)
    alice.chat(str(fresh.boundjid), "last")
    await fresh.expect_message("last", timeout=SAFETY)
    assert bodies(fresh) == [], bodies(fresh)


@async_test(timeout=180.0)
async def test_a_client_syncing_through_the_archive_finds_its_messages_there_not_offline_too(
        make_server):
    # Bob's client catches up from the archive (it queried it on this session): a message
    # the archive holds for him is not also put in offline storage when his session, never
    # resumed, ends; he would get it twice.
    server = make_server(c2s={"resume_timeout_secs": 2})
    alice = await login(server, "alice")
    bob = await sm_login(server, "bob")
    reply, _ = await mam_query(bob)
    assert reply.get("type") == "result", ET.tostring(reply)
    bob.transport.pause_reading()
    alice.chat(str(bob.boundjid), "in the archive")
    await settled(alice)

    since = server.line_count()
    bob.kill()
    await logged(server, "detached session not resumed: ending it", since)
    await logged(server, "session closed", since)

    fresh = await login(server, "bob")
    alice.chat(str(fresh.boundjid), "last")
    await fresh.expect_message("last", timeout=SAFETY)
    assert bodies(fresh) == [], "nothing came from offline storage"
    _, results = await mam_query(fresh)
    archived = [m.findtext(q(CLIENT_NS, "body")) for _, m in results]
    assert archived.count("in the archive") == 1, archived


@async_test(timeout=120.0)
async def test_a_bogus_id_fails_and_the_client_binds_instead(make_server):
    server = make_server()

    def bogus(client) -> None:
        with_sm(client)
        client.plugin["xep_0198"].sm_id = "00000000000000000000000000000000"

    bob = await login(server, "bob", setup=bogus)
    await until(lambda: len(bob.sm_events) >= 2, "<failed/>, then <enabled/>")
    (first, failed), (second, _) = bob.sm_events[:2]
    assert first == "sm_failed", ET.tostring(failed.xml)
    assert failed.xml.find(q(STANZAS, "item-not-found")) is not None, ET.tostring(failed.xml)
    assert failed.xml.get("h") is None, "nothing is known of that id"
    assert second == "sm_enabled"
    new_id = bob.plugin["xep_0198"].sm_id
    assert new_id and len(new_id) >= 32 and new_id != "0" * 32
    await settled(bob)


@async_test(timeout=120.0)
async def test_another_account_cannot_resume_a_session(make_server):
    server = make_server(c2s={"resume_timeout_secs": 600})
    bob = await sm_login(server, "bob")
    stolen = bob.plugin["xep_0198"].sm_id
    since = server.line_count()
    bob.kill()
    await logged(server, "session detached from its connection", since)

    def thief(client) -> None:
        with_sm(client)
        client.plugin["xep_0198"].sm_id = stolen

    carol = await login(server, "carol", setup=thief)
    await until(lambda: carol.sm_events, "an answer to <resume/>")
    event, failed = carol.sm_events[0]
    assert event == "sm_failed" and failed.xml.find(q(STANZAS, "item-not-found")) is not None
    # Bob still can.
    await reconnect_and_resume(server, bob)


@async_test(timeout=120.0)
async def test_acknowledgements_both_ways_and_enable_twice(make_server):
    server = make_server()
    bob = await sm_login(server, "bob")
    # The server's count of what bob sent agrees with bob's own bookkeeping.
    plugin = bob.plugin["xep_0198"]
    for _ in range(3):
        await settled(bob)
    plugin.request_ack()
    await until(lambda: plugin.seq == plugin.last_ack and not plugin.unacked_queue,
                "the server acknowledged everything bob sent")
    # And the server asks bob for his: bob answered for everything he handled.
    alice = await login(server, "alice")
    alice.chat(str(bob.boundjid), "count me")
    await bob.expect_message("count me", timeout=SAFETY)
    await settled(bob)

    failures: list[ET.Element] = []
    bob.register_handler(Callback("sm failed", MatchXPath(f"{{{SM}}}failed"),
                                  lambda s: failures.append(s.xml), instream=True))
    bob.send_raw(f"<enable xmlns='{SM}'/>")
    await until(lambda: failures, "<failed/> for a second <enable/>")
    assert failures[0].find(q(STANZAS, "unexpected-request")) is not None
    assert not bob.stream_errors
    await settled(bob)


@async_test(timeout=120.0)
async def test_an_idle_test_client_answers_the_servers_ping(make_server):
    # The test clients answer the liveness check's ping (XEP-0199) as any slixmpp client does:
    # one that did not was dropped as dead once idle for the interval and the timeout, while
    # a test waited for something else (another client's half-open connection to be found).
    server = make_server(c2s={"ping_interval_secs": 1, "ping_timeout_secs": 60})
    alice = await login(server, "alice")
    answers: list[ET.Element] = []

    def outgoing(stanza):
        if stanza.xml.tag == q(CLIENT_NS, "iq") and (stanza.xml.get("id") or "").startswith("ping-"):
            answers.append(stanza.xml)
        return stanza

    alice.add_filter("out", outgoing)
    await until(lambda: answers, "an answer to the server's ping")
    assert answers[0].get("type") in ("result", "error"), ET.tostring(answers[0])


@async_test(timeout=120.0)
async def test_a_client_that_does_not_answer_the_ping_is_closed(make_server):
    # No stream management: the server sends an XEP-0199 ping to a quiet client. A client
    # that answers stays; one that stopped reading is gone within the interval and timeout.
    server = make_server(c2s={"ping_interval_secs": 2, "ping_timeout_secs": 10})
    alice = await login(server, "alice")
    pinged: list[ET.Element] = []
    bob = await login(server, "bob")
    bob.register_handler(Callback(
        "server ping", MatchXPath(f"{{{CLIENT_NS}}}iq/{{urn:xmpp:ping}}ping"),
        lambda s: pinged.append(s.xml)))
    await until(lambda: pinged, "a ping from the server")
    assert pinged[0].get("from") == server.domain
    await settled(bob)  # still connected after answering

    since = server.line_count()
    bob.transport.pause_reading()
    await logged(server, "no answer to the liveness check", since)
    await logged(server, "session closed", since)


# --- Wire-level cases no well-behaved client produces --------------------------------------

PING = "<ping xmlns='urn:xmpp:ping'/>"


def logged_sync(server, text: str, since: int) -> None:
    """``logged`` for the blocking tests below."""
    deadline = time.monotonic() + SAFETY
    while text not in server.output(since):
        assert time.monotonic() < deadline, f"server log {text!r} not within {SAFETY}s"
        time.sleep(0.05)


def authenticated(server, user: str) -> RawClient:
    """A raw stream authenticated as ``user`` and not bound: where a ``<resume/>`` goes."""
    client = RawClient(server.starttls_port, timeout=SAFETY)
    client.open()
    client.starttls()
    client.open()
    assert client.auth_plain(user, PASSWORD).tag == q(SASL_NS, "success")
    client.open()
    return client


def test_an_acknowledgement_of_more_than_was_sent_ends_the_stream(make_server):
    # XEP-0198 §4: <undefined-condition/> with <handled-count-too-high/> naming both counts.
    server = make_server()
    client = RawClient(server.starttls_port, timeout=SAFETY)
    client.login("bob", PASSWORD, resource="raw")
    client.send(f"<enable xmlns='{SM}'/>")
    client.expect(q(SM, "enabled"))
    client.iq("get", PING)  # one stanza sent to bob since <enabled/>
    client.send(f"<a xmlns='{SM}' h='5'/>")
    error = client.wait_for(lambda e: e.tag == q(STREAM_NS, "error"))
    assert stream_error_condition(error) == "undefined-condition", ET.tostring(error)
    too_high = error.find(q(SM, "handled-count-too-high"))
    assert too_high is not None, ET.tostring(error)
    assert (too_high.get("h"), too_high.get("send-count")) == ("5", "1"), ET.tostring(error)
    assert client.wait_closed()


def test_a_resume_acknowledging_more_than_was_sent_fails(make_server):
    # XEP-0198 §5: <failed/> with the server's h, <undefined-condition/> and
    # <handled-count-too-high/>.
    server = make_server(c2s={"resume_timeout_secs": 600})
    client = RawClient(server.starttls_port, timeout=SAFETY)
    client.login("bob", PASSWORD, resource="raw")
    client.send(f"<enable xmlns='{SM}' resume='true'/>")
    previd = client.expect(q(SM, "enabled")).get("id")
    client.iq("get", PING)  # one stanza each way
    since = server.line_count()
    client.close()  # no closing tag
    logged_sync(server, "session detached from its connection", since)

    again = authenticated(server, "bob")
    again.send(f"<resume xmlns='{SM}' previd='{previd}' h='7'/>")
    failed = again.expect(q(SM, "failed"))
    assert failed.get("h") == "1", ET.tostring(failed)
    assert failed.find(q(STANZAS, "undefined-condition")) is not None, ET.tostring(failed)
    too_high = failed.find(q(SM, "handled-count-too-high"))
    assert too_high is not None, ET.tostring(failed)
    assert (too_high.get("h"), too_high.get("send-count")) == ("7", "1"), ET.tostring(failed)
    # The stream goes on: the client binds a new session.
    assert again.bind("again").endswith("/again")
