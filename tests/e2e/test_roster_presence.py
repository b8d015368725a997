"""Roster and presence (RFC 6121): the subscription handshake in both directions, presence
broadcast and probes, unavailable presence on disconnect, directed presence, pre-approval
(§3.4), unsubscribe and cancel, roster versioning (§2.6), roster pushes to every
interested resource (§2.1.6), and roster changes refused when storage fails."""

import asyncio
import sqlite3
import xml.etree.ElementTree as ET

from clients import ROSTER_NS, async_test, login, q, stanza_error

A, B, C = "alice@localhost", "bob@localhost", "carol@localhost"


def is_presence_from(sender_bare: str, ptype: str | None = None):
    def match(e) -> bool:
        return (e.tag == q("jabber:client", "presence")
                and (e.get("from") or "").split("/")[0] == sender_bare
                and e.get("type") == ptype)
    return match


async def subscribe(user, contact, user_jid: str, contact_jid: str) -> None:
    """``user`` asks ``contact`` for presence subscription and ``contact`` approves."""
    user.send_presence(pto=contact_jid, ptype="subscribe")
    item = await user.expect_roster_push(contact_jid)
    assert item.get("ask") == "subscribe", item.attrib
    request = await contact.expect_presence(user_jid, "subscribe")
    # RFC 6121 §3.1.2: the request is stamped with the user's bare JID.
    assert request.get("from") == user_jid, request.attrib
    contact.send_presence(pto=user_jid, ptype="subscribed")
    item = await contact.expect_roster_push(user_jid)
    assert item.get("subscription") in ("from", "both"), item.attrib
    await user.expect_presence(contact_jid, "subscribed")
    item = await user.expect_roster_push(contact_jid)
    assert item.get("subscription") in ("to", "both") and item.get("ask") is None, item.attrib


async def mutual(alice, bob) -> None:
    await subscribe(alice, bob, A, B)
    await subscribe(bob, alice, B, A)
    # Drain pushes produced by the handshake so later expectations see fresh ones.
    await asyncio.sleep(0.3)
    for client in (alice, bob):
        client.received.clear()


@async_test()
async def test_add_each_other_and_see_presence(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")

    alice.send_presence(pto=B, ptype="subscribe")
    item = await alice.expect_roster_push(B)
    assert (item.get("subscription"), item.get("ask")) == ("none", "subscribe")
    await bob.expect_presence(A, "subscribe")

    bob.send_presence(pto=A, ptype="subscribed")
    item = await bob.expect_roster_push(A)
    assert item.get("subscription") == "from"
    await alice.expect_presence(B, "subscribed")
    item = await alice.expect_roster_push(B)
    assert item.get("subscription") == "to" and item.get("ask") is None, item.attrib
    # §3.1.6: once subscribed, alice gets bob's current presence.
    await alice.expect_presence(str(bob.boundjid), full=True)

    bob.send_presence(pto=A, ptype="subscribe")
    item = await bob.expect_roster_push(A)
    assert (item.get("subscription"), item.get("ask")) == ("from", "subscribe")
    await alice.expect_presence(B, "subscribe")
    alice.send_presence(pto=B, ptype="subscribed")
    item = await alice.expect_roster_push(B)
    assert item.get("subscription") == "both"
    item = await bob.expect_roster_push(A)
    assert item.get("subscription") == "both"
    await bob.expect_presence(str(alice.boundjid), full=True)

    # Presence changes are broadcast to subscribers.
    alice.send_presence(pshow="away", pstatus="lunch")
    away = await bob.expect_presence(str(alice.boundjid), full=True)
    assert away.findtext(q("jabber:client", "show")) == "away"
    assert away.findtext(q("jabber:client", "status")) == "lunch"

    # The roster as stored agrees.
    roster = await alice.iq("get", f"<query xmlns='{ROSTER_NS}'/>")
    items = {i.get("jid"): i.get("subscription")
             for i in roster.iter(q(ROSTER_NS, "item"))}
    assert items == {B: "both"}, items


@async_test()
async def test_probe_on_login_and_unavailable_on_disconnect(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await mutual(alice, bob)

    # A second alice resource logging in gets bob's presence by probe.
    alice2 = await login(server, "alice")
    await alice2.expect_presence(str(bob.boundjid), full=True)
    # ...and bob sees it come online.
    await bob.expect_presence(str(alice2.boundjid), full=True)

    # A clean close and a dropped TCP connection both end in unavailable presence.
    await alice2.close()
    await bob.expect_presence(str(alice2.boundjid), "unavailable", full=True)
    alice.kill()
    await bob.expect_presence(str(alice.boundjid), "unavailable", full=True)


@async_test()
async def test_explicit_unavailable(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await mutual(alice, bob)
    alice.send_presence(ptype="unavailable")
    await bob.expect_presence(str(alice.boundjid), "unavailable", full=True)
    # Still connected: messages to the full JID still arrive.
    bob.chat(str(alice.boundjid), "you there?")
    await alice.expect_message("you there?", B)


@async_test()
async def test_no_presence_without_subscription(server):
    alice = await login(server, "alice")
    carol = await login(server, "carol")
    alice.send_presence(pstatus="not for carol")
    await carol.expect_none(is_presence_from(A), 1.0, "presence leak to a non-subscriber")


@async_test()
async def test_directed_presence(server):
    alice = await login(server, "alice")
    carol = await login(server, "carol")
    alice.send_presence(pto=str(carol.boundjid), pstatus="just for carol")
    directed = await carol.expect_presence(str(alice.boundjid), full=True)
    assert directed.findtext(q("jabber:client", "status")) == "just for carol"
    # §4.6.3: when alice goes offline, carol is told even without a subscription.
    await alice.close()
    await carol.expect_presence(str(alice.boundjid), "unavailable", full=True)


@async_test()
async def test_pre_approval(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    # bob approves alice before she asks (RFC 6121 §3.4).
    bob.send_presence(pto=A, ptype="subscribed")
    item = await bob.expect_roster_push(A)
    assert item.get("approved") == "true", item.attrib
    assert item.get("subscription") == "none", item.attrib
    await alice.expect_none(is_presence_from(B, "subscribed"), 0.5,
                            "subscribed before any request")

    alice.send_presence(pto=B, ptype="subscribe")
    await alice.expect_presence(B, "subscribed")
    item = await bob.expect_roster_push(A)
    assert item.get("subscription") == "from", item.attrib
    await bob.expect_none(is_presence_from(A, "subscribe"), 0.5,
                          "a pre-approved request still shown to the contact")


@async_test()
async def test_unsubscribe_and_cancel(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await mutual(alice, bob)

    # alice stops following bob.
    alice.send_presence(pto=B, ptype="unsubscribe")
    assert (await alice.expect_roster_push(B)).get("subscription") == "from"
    assert (await bob.expect_roster_push(A)).get("subscription") == "to"
    await bob.expect_presence(A, "unsubscribe")
    # §3.3.3: she no longer gets his presence, so she is told he is unavailable.
    await alice.expect_presence(str(bob.boundjid), "unavailable", full=True)

    # alice also revokes bob's subscription to her.
    alice.send_presence(pto=B, ptype="unsubscribed")
    assert (await alice.expect_roster_push(B)).get("subscription") == "none"
    assert (await bob.expect_roster_push(A)).get("subscription") == "none"
    await bob.expect_presence(A, "unsubscribed")
    await bob.expect_presence(str(alice.boundjid), "unavailable", full=True)

    bob.received.clear()
    alice.send_presence(pstatus="nobody sees this")
    await bob.expect_none(is_presence_from(A), 1.0, "presence after cancel")


@async_test()
async def test_roster_versioning(server):
    alice = await login(server, "alice", roster=False)
    first = await alice.iq("get", f"<query xmlns='{ROSTER_NS}' ver=''/>")
    assert first.get("type") == "result"
    query = first.find(q(ROSTER_NS, "query"))
    assert query is not None and query.get("ver") is not None, "no roster version offered"
    ver = query.get("ver")

    unchanged = await alice.iq("get", f"<query xmlns='{ROSTER_NS}' ver='{ver}'/>")
    assert unchanged.get("type") == "result"
    assert len(unchanged) == 0, "roster sent again although unchanged (RFC 6121 §2.6.3)"

    added = await alice.iq("set", f"<query xmlns='{ROSTER_NS}'><item jid='{C}' name='Carol'>"
                                  "<group>Friends</group></item></query>")
    assert added.get("type") == "result"
    push = await alice.expect_roster_push(C)
    assert push.get("name") == "Carol"
    changed = await alice.iq("get", f"<query xmlns='{ROSTER_NS}' ver='{ver}'/>")
    assert changed.get("type") == "result"
    # Either the whole roster with a new version, or an empty result followed by pushes.
    query = changed.find(q(ROSTER_NS, "query"))
    if query is not None:
        assert query.get("ver") not in (None, ver), query.attrib
        assert [i.get("jid") for i in query.iter(q(ROSTER_NS, "item"))] == [C]
    else:
        await alice.expect_roster_push(C)


@async_test()
async def test_roster_push_to_other_resources(server):
    phone = await login(server, "alice")
    laptop = await login(server, "alice")
    not_interested = await login(server, "alice", roster=False)

    reply = await phone.iq("set", f"<query xmlns='{ROSTER_NS}'><item jid='{C}'/></query>")
    assert reply.get("type") == "result"
    for client in (phone, laptop):
        item = await client.expect_roster_push(C)
        assert item.get("subscription") == "none"
    await not_interested.expect_none(
        lambda e: e.find(q(ROSTER_NS, "query")) is not None, 0.5,
        "roster push to a resource that never asked for the roster")

    reply = await laptop.iq("set", f"<query xmlns='{ROSTER_NS}'>"
                                   f"<item jid='{C}' subscription='remove'/></query>")
    assert reply.get("type") == "result"
    for client in (phone, laptop):
        item = await client.expect_roster_push(C)
        assert item.get("subscription") == "remove"
    roster = await phone.iq("get", f"<query xmlns='{ROSTER_NS}'/>")
    assert list(roster.iter(q(ROSTER_NS, "item"))) == []


@async_test()
async def test_roster_set_errors(server):
    alice = await login(server, "alice")
    two_items = (f"<query xmlns='{ROSTER_NS}'><item jid='{B}'/><item jid='{C}'/></query>")
    reply = await alice.iq("set", two_items)
    assert reply.get("type") == "error", "roster set with two items accepted (§2.3.3)"
    reply = await alice.iq("set", f"<query xmlns='{ROSTER_NS}'><item jid='{B}'/></query>",
                           to=C)
    assert reply.get("type") == "error", "roster set on someone else's roster accepted"


@async_test(timeout=120)
async def test_a_roster_change_that_cannot_be_stored_is_refused(server):
    """Storage that fails for real (another process holds SQLite's write lock past xmppd's
    busy timeout): the change is refused with an error, and no push, subscription request or
    presence goes out for it."""
    alice = await login(server, "alice")
    phone = await login(server, "alice")
    bob = await login(server, "bob")
    db = sqlite3.connect(server.data_dir / "xmppd.sqlite", timeout=30, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        reply = await alice.iq("set", f"<query xmlns='{ROSTER_NS}'><item jid='{C}'/></query>",
                               timeout=30)
        assert reply.get("type") == "error", ET.tostring(reply)
        assert stanza_error(reply) == "internal-server-error", ET.tostring(reply)
        alice.send_presence(pto=B, ptype="subscribe")
        refused = await alice.expect(
            lambda e: e.tag == q("jabber:client", "presence") and e.get("type") == "error",
            timeout=30, what="presence error for the subscription request")
        assert stanza_error(refused) == "internal-server-error", ET.tostring(refused)
    finally:
        db.execute("ROLLBACK")
        db.close()

    # What comes next arrives after anything the refused changes could have sent.
    reply = await alice.iq("set", f"<query xmlns='{ROSTER_NS}'><item jid='{B}'/></query>")
    assert reply.get("type") == "result", ET.tostring(reply)
    first = await phone.expect(
        lambda e: e.find(q(ROSTER_NS, "query")) is not None, what="roster push")
    assert first.find(f"{q(ROSTER_NS, 'query')}/{q(ROSTER_NS, 'item')}").get("jid") == B
    alice.chat(B, "after the outage")
    await bob.expect_message("after the outage")
    assert not [e for e in bob.received if is_presence_from(A, "subscribe")(e)], \
        "a subscription request that was not stored reached the contact"
    roster = await alice.iq("get", f"<query xmlns='{ROSTER_NS}'/>")
    items = [(i.get("jid"), i.get("ask")) for i in roster.iter(q(ROSTER_NS, "item"))]
    assert items == [(B, None)], items
