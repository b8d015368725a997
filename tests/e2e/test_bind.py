"""Resource binding (RFC 6120 §7) and the legacy session request (RFC 3921 §3, accepted as a
no-op): generated resources, resource conflicts (the newest session wins, the older one is
ended with a ``<conflict/>`` stream error) and binding errors."""

import asyncio

import pytest

from clients import async_test, login
from conftest import PASSWORD
from raw import BIND_NS, CLIENT_NS, SESSION_NS, RawClient, q


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
