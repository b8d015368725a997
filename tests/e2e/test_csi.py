"""Client state indication (XEP-0352) through slixmpp's xep_0352 plugin: while alice's client
says it is inactive, her contact's presence changes wait and collapse to the latest; a
message with a body passes at once, after what waited; `<active/>` lets everything go before
the server answers her next stanza (§5.1).

Nothing here waits for time to pass: what alice holds is shown by what arrives before a
stanza that passes at once (a message, the answer to her ping), which comes after it.
"""

from __future__ import annotations

from clients import CLIENT_NS, async_test, login, q, settled
from test_roster_presence import mutual
from test_sm import logged, reconnect_and_resume, until, with_sm

SHOWS = ("away", "dnd", "xa", "chat", "away", "dnd", "xa")


def shows_from(client, sender: str) -> list[str]:
    """The shows of the presence from ``sender`` (bare) that ``client`` recorded, in order."""
    shows = (shows_from_one(e, sender) for e in client.received)
    return [s for s in shows if s is not None]


async def flap(bob) -> None:
    for show in SHOWS:
        bob.send_presence(pshow=show)
    await settled(bob)


async def inactive_while_bob_flaps(server):
    """Alice (with slixmpp's CSI plugin) and bob, subscribed both ways; alice goes inactive
    once everything the handshake caused has reached her, then bob's presence flaps."""
    # Registered before connecting: the plugin reads the stream features.
    alice = await login(server, "alice", setup=lambda c: c.register_plugin("xep_0352"))
    assert alice.plugin["xep_0352"].enabled, "the server offers <csi/> after login"
    bob = await login(server, "bob")
    await mutual(alice, bob)
    await settled(bob)
    await settled(alice)
    alice.received.clear()
    alice.plugin["xep_0352"].send_inactive()
    await settled(alice)
    await flap(bob)
    return alice, bob


@async_test()
async def test_presence_waits_while_inactive_and_a_message_passes_at_once(server):
    alice, bob = await inactive_while_bob_flaps(server)
    bob.chat("alice@localhost", "wake up")
    await alice.expect_message("wake up")
    # Only the latest of bob's changes, and before the message.
    assert shows_from(alice, "bob@localhost") == [SHOWS[-1]]
    assert alice.received[-1].tag == q(CLIENT_NS, "presence")

    # Active again (once the server has read the <active/>: the answer to her ping comes
    # after it): each change arrives as it happens.
    alice.plugin["xep_0352"].send_active()
    await settled(alice)
    alice.received.clear()
    await flap(bob)
    bob.chat("alice@localhost", "marker")
    await alice.expect_message("marker")
    assert shows_from(alice, "bob@localhost") == list(SHOWS)


@async_test()
async def test_becoming_active_lets_what_waited_go_before_the_next_answer(server):
    alice, bob = await inactive_while_bob_flaps(server)
    # A chat state waits too, in order with the rest.
    bob.send_raw("<message to='alice@localhost' type='chat'>"
                 "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>")
    await settled(bob)
    alice.received.clear()
    alice.plugin["xep_0352"].send_active()
    # The ping's answer comes after everything that waited (XEP-0352 §5.1).
    await settled(alice)
    assert shows_from(alice, "bob@localhost") == [SHOWS[-1]]
    composing = [e for e in alice.received
                 if e.find("{http://jabber.org/protocol/chatstates}composing") is not None]
    assert len(composing) == 1


@async_test(timeout=180.0)
async def test_a_resumed_session_starts_active(make_server):
    # XEP-0352 §4: the server assumes a client active at the start of a stream, a resumed one
    # (XEP-0198 §5) included: what waited goes out without an <active/>, and what comes next
    # passes at once.
    server = make_server(c2s={"resume_timeout_secs": 600})

    def setup(client) -> None:
        client.register_plugin("xep_0352")
        with_sm(client)

    alice = await login(server, "alice", setup=setup)
    await until(lambda: alice.plugin["xep_0198"].sm_id is not None, "stream management enabled")
    bob = await login(server, "bob")
    await mutual(alice, bob)
    await settled(bob)
    await settled(alice)
    alice.plugin["xep_0352"].send_inactive()
    await settled(alice)

    since = server.line_count()
    alice.kill()
    await logged(server, "session detached from its connection", since)
    await flap(bob)
    alice.received.clear()
    await reconnect_and_resume(server, alice)
    await alice.expect(lambda e: shows_from_one(e, "bob@localhost") == SHOWS[-1])
    bob.send_presence(pshow="chat")
    await alice.expect(lambda e: shows_from_one(e, "bob@localhost") == "chat")


def shows_from_one(e, sender: str) -> str | None:
    """The show of ``e`` if it is presence from ``sender`` (bare), else None."""
    if e.tag != q(CLIENT_NS, "presence") or not (e.get("from") or "").startswith(sender + "/"):
        return None
    return e.findtext(q(CLIENT_NS, "show")) or ""
