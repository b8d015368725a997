"""Blocking (XEP-0191) with slixmpp's xep_0191 plugin, and spam reports (XEP-0377) with its
xep_0377 plugin: the list and its pushes, what a block does to presence, messages and IQs in
both directions, unblocking, the list across a restart, and reports reaching an administrator.

That something did NOT arrive is checked behind a marker: a later stanza on the same path (or
from a third party once the first stanza's handling is known to be over) whose arrival proves
the earlier one would have come first."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, bare, login, q, settled, stanza_error
from conftest import PASSWORD
from test_roster_presence import subscribe

A, B, C = "alice@localhost", "bob@localhost", "carol@localhost"
BLOCKING = "urn:xmpp:blocking"
BLOCKING_ERRORS = "urn:xmpp:blocking:errors"
REPORTING = "urn:xmpp:reporting:1"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


async def blocker(server, user: str, **kw):
    client = await login(server, user, **kw)
    client.register_plugin("xep_0191")
    client.register_plugin("xep_0377")
    return client


async def mutual_contacts(alice, bob) -> None:
    """alice and bob subscribe to each other; everything the handshake sent has arrived (each
    client's ping is answered after what its own stanzas caused) and is forgotten."""
    await subscribe(alice, bob, A, B)
    await subscribe(bob, alice, B, A)
    for client in (alice, bob):
        await settled(client)
    for client in (alice, bob):
        await settled(client)
        client.received.clear()


def is_presence(sender: str, ptype: str | None = None):
    def match(e: ET.Element) -> bool:
        return (e.tag == q(CLIENT_NS, "presence") and bare(e.get("from")) == bare(sender)
                and e.get("type") == ptype)
    return match


def any_presence_from(sender: str):
    return lambda e: e.tag == q(CLIENT_NS, "presence") and bare(e.get("from")) == bare(sender)


def is_error_from(name: str, sender: str):
    return lambda e: (e.tag == q(CLIENT_NS, name) and e.get("type") == "error"
                      and bare(e.get("from")) == bare(sender))


def assert_blocked_error(reply: ET.Element) -> None:
    """XEP-0191 §3.3: what the user sent to a JID it blocks comes back as <not-acceptable/>
    with <blocked xmlns='urn:xmpp:blocking:errors'/>."""
    assert stanza_error(reply) == "not-acceptable", ET.tostring(reply)
    error = reply.find(q(CLIENT_NS, "error"))
    assert error.find(q(BLOCKING_ERRORS, "blocked")) is not None, ET.tostring(reply)


def push_items(push: ET.Element, kind: str) -> set[str] | None:
    el = push.find(q(BLOCKING, kind))
    if el is None:
        return None
    return {i.get("jid") for i in el.findall(q(BLOCKING, "item"))}


def is_push(kind: str):
    return lambda e: e.tag == q(CLIENT_NS, "iq") and e.find(q(BLOCKING, kind)) is not None


async def marker(sender, receiver, text: str) -> None:
    """``sender`` sends ``receiver`` a message and it arrives: whatever was queued for the
    receiver before it has arrived too."""
    sender.chat(str(receiver.boundjid.bare), text)
    await receiver.expect_message(text)


@async_test()
async def test_blocking_and_reporting_are_advertised(server):
    alice = await login(server, "alice")
    for to in ("localhost", A):
        info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to=to)
        features = {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}
        assert {BLOCKING, REPORTING} <= features, (to, sorted(features))


@async_test()
async def test_block_stops_presence_messages_and_iqs_both_ways(server):
    alice = await blocker(server, "alice")
    bob = await login(server, "bob")
    carol = await login(server, "carol")
    await mutual_contacts(alice, bob)
    blocking = alice.plugin["xep_0191"]
    assert await blocking.get_blocked_jids() == set()

    await blocking.block(B)
    assert {str(j) for j in await blocking.get_blocked_jids()} == {B}
    # §3.3: the server sends unavailable presence on alice's behalf.
    gone = await bob.expect(is_presence(A, "unavailable"), what="alice's unavailable")
    assert gone.get("from") == str(alice.boundjid), ET.tostring(gone)

    # Bob's message to alice bounces with <service-unavailable/>; she never sees it: carol's
    # marker, sent once bob's message was handled, comes after where it would have been.
    bob.chat(A, "let me in")
    bounce = await bob.expect(is_error_from("message", A), what="bounce from alice")
    assert stanza_error(bounce) == "service-unavailable", ET.tostring(bounce)
    await marker(carol, alice, "marker 1")
    assert not [e for e in alice.received if e.findtext(q(CLIENT_NS, "body")) == "let me in"]

    # Alice's message to bob is refused with <not-acceptable/><blocked/>.
    alice.chat(B, "hello?")
    assert_blocked_error(await alice.expect(is_error_from("message", B), what="refusal"))

    # Alice's presence changes reach carol's marker but not bob; nor does directed presence.
    alice.send_presence(pshow="away")
    await settled(alice)
    alice.send_presence(pto=B)
    assert_blocked_error(await alice.expect(is_error_from("presence", B), what="refusal"))
    await marker(carol, bob, "marker 2")
    assert not [e for e in bob.received if any_presence_from(A)(e)], bob.received

    # Bob logs in again: his probe is not answered (§3.3), so he does not see alice online.
    await bob.close()
    bob = await login(server, "bob")
    await marker(carol, bob, "marker 3")
    assert not [e for e in bob.received if any_presence_from(A)(e)], bob.received

    # IQs: bob's request gets <service-unavailable/>; alice's is refused as blocked.
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    reply = await bob.iq("get", ping, to=str(alice.boundjid))
    assert stanza_error(reply) == "service-unavailable", ET.tostring(reply)
    assert_blocked_error(await alice.iq("get", ping, to=str(bob.boundjid)))

    # Carol, not blocked, still reaches alice both ways.
    await marker(alice, carol, "to carol")
    await marker(carol, alice, "to alice")


@async_test()
async def test_directed_presence_target_gets_unavailable_when_blocked(server):
    alice = await blocker(server, "alice")
    carol = await login(server, "carol")
    alice.send_presence(pto=C)
    await carol.expect(is_presence(A), what="alice's directed presence")
    await alice.plugin["xep_0191"].block(C)
    await carol.expect(is_presence(A, "unavailable"), what="alice's unavailable")


@async_test()
async def test_pushes_reach_the_resources_that_asked_for_the_list(server):
    phone = await blocker(server, "alice", resource="phone")
    laptop = await blocker(server, "alice", resource="laptop")
    quiet = await login(server, "alice", resource="quiet")
    bob = await login(server, "bob")
    await phone.plugin["xep_0191"].get_blocked_jids()
    await laptop.plugin["xep_0191"].get_blocked_jids()

    await phone.plugin["xep_0191"].block([C, "spam.example"])
    for client in (phone, laptop):
        push = await client.expect(is_push("block"), what="block push")
        assert push_items(push, "block") == {C, "spam.example"}, ET.tostring(push)
        assert push.get("from") in (None, A), ET.tostring(push)

    await laptop.plugin["xep_0191"].unblock(C)
    for client in (phone, laptop):
        push = await client.expect(is_push("unblock"), what="unblock push")
        assert push_items(push, "unblock") == {C}, ET.tostring(push)

    reply = await laptop.iq("set", f"<unblock xmlns='{BLOCKING}'/>")
    assert reply.get("type") == "result", ET.tostring(reply)
    for client in (phone, laptop):
        push = await client.expect(is_push("unblock"), what="unblock-all push")
        assert push_items(push, "unblock") == set(), ET.tostring(push)
    assert await phone.plugin["xep_0191"].get_blocked_jids() == set()

    # The resource that never asked got no push: bob's marker comes after where they were.
    await marker(bob, quiet, "marker")
    assert not [e for e in quiet.received if e.tag == q(CLIENT_NS, "iq")], quiet.received


@async_test()
async def test_unblock_all_restores_presence_and_messages(server):
    alice = await blocker(server, "alice")
    bob = await login(server, "bob")
    await mutual_contacts(alice, bob)
    blocking = alice.plugin["xep_0191"]
    await blocking.block([B, C])
    assert {str(j) for j in await blocking.get_blocked_jids()} == {B, C}
    await bob.expect(is_presence(A, "unavailable"))

    reply = await alice.iq("set", f"<unblock xmlns='{BLOCKING}'/>")
    assert reply.get("type") == "result", ET.tostring(reply)
    assert await blocking.get_blocked_jids() == set()
    # §3.4: bob, a subscriber again, gets alice's current presence.
    await bob.expect(is_presence(A), what="alice's presence after unblock")
    await marker(alice, bob, "back")
    await marker(bob, alice, "welcome back")


@async_test()
async def test_bad_block_requests_get_errors(server):
    alice = await blocker(server, "alice")
    reply = await alice.iq("set", f"<block xmlns='{BLOCKING}'/>")
    assert stanza_error(reply) == "bad-request", ET.tostring(reply)
    reply = await alice.iq("set", f"<block xmlns='{BLOCKING}'><item jid='a@@b'/></block>")
    assert stanza_error(reply) == "jid-malformed", ET.tostring(reply)
    reply = await alice.iq("get", f"<block xmlns='{BLOCKING}'><item jid='{B}'/></block>")
    assert stanza_error(reply) == "bad-request", ET.tostring(reply)
    # Someone else's list is not bob's to read.
    bob = await login(server, "bob")
    reply = await bob.iq("get", f"<blocklist xmlns='{BLOCKING}'/>", to=A)
    assert stanza_error(reply) == "forbidden", ET.tostring(reply)
    assert await alice.plugin["xep_0191"].get_blocked_jids() == set()


@async_test()
async def test_the_block_list_survives_a_restart(server):
    alice = await blocker(server, "alice")
    await alice.plugin["xep_0191"].block([B, "spam.example"])
    await alice.close()
    server.restart()

    alice = await blocker(server, "alice")
    blocked = {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids()}
    assert blocked == {B, "spam.example"}
    bob = await login(server, "bob")
    bob.chat(A, "after the restart")
    bounce = await bob.expect(is_error_from("message", A), what="bounce from alice")
    assert stanza_error(bounce) == "service-unavailable", ET.tostring(bounce)


async def session_closed(server, since: int, user: str, timeout: float = 20.0) -> None:
    """Waits until the server logged the end of a session of ``user`` after line ``since``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while f"session closed jid={user}/" not in server.output(since):
        assert loop.time() < deadline, f"no end of {user}'s session logged"
        await asyncio.sleep(0.05)


@async_test()
async def test_a_blocked_go_sendxmpp_user_does_not_reach_the_blocker(server):
    program = shutil.which("go-sendxmpp")
    assert program, "go-sendxmpp is not installed (Debian package go-sendxmpp)"
    alice = await blocker(server, "alice")
    carol = await login(server, "carol")
    await alice.plugin["xep_0191"].block(B)
    since = server.line_count()
    result = subprocess.run(
        [program, "-u", B, "-p", PASSWORD, "-j", f"127.0.0.1:{server.starttls_port}", "-n", A],
        input="from another client", capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    # The server ends a session after handling what it read from it: once bob's is closed,
    # his message was handled, before carol's marker.
    await session_closed(server, since, B)
    await marker(carol, alice, "marker")
    bodies = [e.findtext(q(CLIENT_NS, "body")) for e in alice.received]
    assert "from another client" not in bodies, bodies


def report_iq(jid: str, reason: str, text: str) -> str:
    return (f"<block xmlns='{BLOCKING}'><item jid='{jid}'>"
            f"<report xmlns='{REPORTING}' reason='urn:xmpp:reporting:{reason}'>"
            f"<text xml:lang='en'>{text}</text></report></item></block>")


def is_report(e: ET.Element) -> bool:
    return e.tag == q(CLIENT_NS, "message") and e.find(q(BLOCKING, "item")) is not None


@async_test()
async def test_a_report_reaches_the_administrator_within_a_quota(make_server):
    server = make_server(server={"admins": [C]})
    alice = await blocker(server, "alice")
    carol = await login(server, "carol")
    bob = await login(server, "bob")

    # slixmpp's own report: blocks as well (XEP-0377 §4).
    await alice.plugin["xep_0377"].report(B, "spam")
    assert {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids()} == {B}
    report = await carol.expect(is_report, what="spam report")
    body = report.findtext(q(CLIENT_NS, "body"))
    assert A in body and B in body and "spam" in body, body

    reply = await alice.iq("set", report_iq("troll@localhost", "abuse", "keeps insulting me"))
    assert reply.get("type") == "result", ET.tostring(reply)
    report = await carol.expect(is_report, what="abuse report")
    body = report.findtext(q(CLIENT_NS, "body"))
    assert "troll@localhost" in body and "abuse" in body and "keeps insulting me" in body, body

    # Ten a reporter per hour: the eleventh block still applies, its report goes nowhere.
    for n in range(8):
        reply = await alice.iq("set", report_iq(f"spammer{n}@localhost", "spam", "again"))
        assert reply.get("type") == "result", ET.tostring(reply)
        await carol.expect(is_report, what=f"report {n + 3}")
    reply = await alice.iq("set", report_iq("one-too-many@localhost", "spam", "over quota"))
    assert reply.get("type") == "result", ET.tostring(reply)
    assert "one-too-many@localhost" in {
        str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids()}
    await marker(bob, carol, "marker")
    assert not [e for e in carol.received if is_report(e)], carol.received

    # A report without a known reason is refused, and blocks nothing.
    reply = await alice.iq("set", report_iq("x@localhost", "nonsense", "?"))
    assert stanza_error(reply) == "bad-request", ET.tostring(reply)


@async_test()
async def test_a_blocked_contacts_waiting_subscription_request_is_not_shown_again(server):
    bob = await login(server, "bob")
    carol = await login(server, "carol")
    bob.send_presence(pto=A, ptype="subscribe")
    await settled(bob)
    # Kept while alice is offline (RFC 6121 §3.1.3), shown at her login.
    alice = await blocker(server, "alice")
    await alice.expect(is_presence(B, "subscribe"), what="bob's request")
    await alice.plugin["xep_0191"].block(B)
    await alice.close()

    alice = await login(server, "alice")
    await marker(carol, alice, "marker")
    assert not [e for e in alice.received if any_presence_from(B)(e)], alice.received


@async_test()
async def test_a_shared_group_contact_gets_unavailable_when_blocked(make_server):
    server = make_server(shared_roster={"group": [{"name": "Team", "members": [A, B]}]})
    bob = await login(server, "bob")
    alice = await blocker(server, "alice")
    await bob.expect(is_presence(A), what="alice's presence through the shared group")
    await alice.plugin["xep_0191"].block(B)
    # From her session (the answer to bob's earlier probe came from her bare JID).
    await bob.expect(lambda e: is_presence(A, "unavailable")(e)
                     and e.get("from") == str(alice.boundjid), what="alice's unavailable")
