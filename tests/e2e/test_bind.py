"""Resource binding (RFC 6120 §7) and the legacy session request (RFC 3921 §3, accepted as a
no-op): generated resources, resource conflicts (the newest session wins, the older one is
ended with a ``<conflict/>`` stream error, and its presence ends before the new one's begins)
and binding errors."""

import asyncio

import pytest

from clients import async_test, login
from conftest import PASSWORD
from raw import BIND_NS, CLIENT_NS, SESSION_NS, RawClient, q

NS_MUC_USER = "http://jabber.org/protocol/muc#user"


@async_test()
async def test_server_generates_distinct_resources(server):
    first = await login(server, "alice")
    second = await login(server, "alice")
    assert first.boundjid.resource and second.boundjid.resource
    assert first.boundjid.resource != second.boundjid.resource
    assert first.boundjid.bare == second.boundjid.bare == "alice@localhost"


def test_raw_bind_without_resource(server):
    client = RawClient(server.starttls_port)
    jid = client.login("alice", PASSWORD)
    user_domain, _, resource = jid.partition("/")
    assert user_domain == "alice@localhost"
    assert resource, jid


def test_legacy_session_is_accepted(server):
    client = RawClient(server.starttls_port)
    client.login("alice", PASSWORD)
    reply = client.iq("set", f"<session xmlns='{SESSION_NS}'/>")
    assert reply.get("type") == "result"


@async_test()
async def test_resource_conflict_newest_wins(server):
    old = RawClient(server.starttls_port)
    old_jid = old.login("alice", PASSWORD, resource="phone")
    new = RawClient(server.starttls_port)
    new_jid = new.login("alice", PASSWORD, resource="phone")
    if old_jid != "alice@localhost/phone" or new_jid != old_jid:
        pytest.skip(f"server does not honour requested resources ({old_jid}, {new_jid})")
    assert old.expect_stream_error() == "conflict"
    # The new session is the one that gets messages now.
    new.send("<presence/>")
    bob = await login(server, "bob")
    bob.chat("alice@localhost/phone", "who has the phone?")
    # The raw client blocks, so it waits in a thread while the event loop sends bob's message.
    message = await asyncio.to_thread(new.wait_for, lambda e: e.tag == q(CLIENT_NS, "message"))
    assert message.findtext(q(CLIENT_NS, "body")) == "who has the phone?"


def test_bind_twice_is_refused(server):
    client = RawClient(server.starttls_port)
    client.login("alice", PASSWORD)
    reply = client.iq("set", f"<bind xmlns='{BIND_NS}'/>")
    assert reply.get("type") == "error", "a second bind on one stream succeeded"


def test_bind_with_invalid_resource(server):
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.starttls()
    client.open(server.domain)
    assert client.auth_plain("alice", PASSWORD).tag.endswith("success")
    client.open(server.domain)
    # A resource longer than the 1023 bytes RFC 7622 §3.4 allows.
    reply = client.iq("set", f"<bind xmlns='{BIND_NS}'><resource>{'r' * 1100}</resource></bind>")
    if reply.get("type") == "result":
        jid = reply.findtext(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}") or ""
        assert len(jid.partition("/")[2].encode()) <= 1023, "over-long resource bound as is"
    else:
        assert reply.get("type") == "error"


ROOM = "den@conference.localhost"


def presence_from(frm: str, ptype: str | None = None):
    def match(e) -> bool:
        return (e.tag == q(CLIENT_NS, "presence") and e.get("from") == frm
                and e.get("type") == ptype)
    return match


@async_test(timeout=120)
async def test_reconnecting_with_a_fixed_resource_while_in_a_room(server):
    """A client with a fixed resource reconnects before its old connection is gone (Profanity
    and mcabber do on every quick reconnect): contacts and the room see the old session leave
    before the new one arrives, and joining the room again is a full join."""
    bob = await login(server, "bob")
    bob.register_plugin("xep_0045")
    bob.register_plugin("xep_0004")
    old = await login(server, "alice", resource="laptop")
    old.register_plugin("xep_0045")
    laptop = "alice@localhost/laptop"
    # bob follows alice's presence.
    bob.send_presence(pto="alice@localhost", ptype="subscribe")
    await old.expect(presence_from("bob@localhost", "subscribe"), what="subscription request")
    old.send_presence(pto="bob@localhost", ptype="subscribed")
    await bob.expect(presence_from(laptop), what="alice's presence")
    # bob's room, with a subject; alice sits in it.
    muc = bob.plugin["xep_0045"]
    await muc.join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    await muc.set_room_config(ROOM, await muc.get_room_config(ROOM))
    muc.set_subject(ROOM, "Plans")
    await bob.expect(lambda e: e.findtext(q(CLIENT_NS, "subject")) == "Plans", what="subject")
    await old.plugin["xep_0045"].join_muc_wait(ROOM, "al", maxstanzas=0, timeout=10)
    await bob.expect(presence_from(f"{ROOM}/al"), what="alice joining")
    bob.received.clear()

    new = await login(server, "alice", resource="laptop")
    new.register_plugin("xep_0045")
    # The contact sees the old session end, then the new one arrive.
    await bob.expect(presence_from(laptop), what="the new session's presence")
    assert any(presence_from(laptop, "unavailable")(e) for e in bob.received), \
        "the replaced session's presence never ended"
    # The room had the old session leave, so this is a full join: occupants, then subject.
    joined, subject, occupants, _ = await new.plugin["xep_0045"].join_muc_wait(
        ROOM, "al", maxstanzas=0, timeout=10)
    assert subject["subject"] == "Plans"
    assert f"{ROOM}/bob" in [str(p["from"]) for p in occupants]
    assert "110" in {s.get("code") for s in joined.xml.iter(q(NS_MUC_USER, "status"))}
    await bob.expect(presence_from(f"{ROOM}/al"), what="alice joining again")
    assert any(presence_from(f"{ROOM}/al", "unavailable")(e) for e in bob.received), \
        "the room never saw the replaced session leave"
