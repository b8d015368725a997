"""Federation (RFC 6120 server-to-server) between two xmppd servers, a.example and
b.example, each on its own loopback address, finding each other through a real DNS server
(dnsmasq, SRV and A records) and holding certificates of a test CA (``S2sNetwork`` of
``s2s_fixture.py``). Users of each exchange presence subscriptions and messages both ways,
authenticated with SASL EXTERNAL (valid certificates) or dialback (certificates the other side
cannot validate); refusals reach the sender as errors."""

from __future__ import annotations

import pytest

from clients import CLIENT_NS, async_test, login, q, stanza_error
from federation import exchange_messages, mutual_subscription, remote_occupant
from s2s_fixture import S2sNetwork

A, B = "a.example", "b.example"
ALICE, BOB = f"alice@{A}", f"bob@{B}"



@pytest.fixture
def pair(tmp_path, make_server):
    """``pair(certs=..., a={...}, b={...})`` starts xmppd for a.example and b.example
    (configuration overrides by section for each) and returns both. ``certs``: ``"valid"``
    (both certified by the CA both trust), ``"untrusted"`` (both by a CA neither trusts),
    ``"wrong-name"`` (b.example presents a valid certificate for another name)."""
    networks: list[S2sNetwork] = []

    def factory(*, certs: str = "valid", a: dict | None = None, b: dict | None = None):
        net = S2sNetwork(tmp_path / "net", (A, B))
        networks.append(net)
        leaves = {d: net.cert(d, trusted=certs != "untrusted") for d in (A, B)}
        if certs == "wrong-name":
            leaves[B] = net.wrong_name_cert()
        net.start()
        servers = []
        for domain, overrides in ((A, a or {}), (B, b or {})):
            peer = net.peers[domain]
            leaf = leaves[domain]
            config = {
                "server": {"hosts": [domain]},
                "tls": {"certificate": [
                    {"domain": domain, "cert": str(leaf.cert), "key": str(leaf.key)}]},
                "s2s": {"enabled": True, "listen": [f"{peer.address}:{peer.s2s_port}"],
                        "resolver": f"{net.dns_address}:53", "ca_file": str(net.ca_file),
                        **overrides.get("s2s", {})},
            }
            servers.append(make_server(**config))
        return tuple(servers)

    yield factory
    for net in networks:
        net.stop()


async def federate(server_a, server_b) -> None:
    """Messages and a mutual presence subscription between alice@a and bob@b, a room on each
    side with an occupant from the other, and presence reaching the contact at the end."""
    alice = await login(server_a, "alice")
    bob = await login(server_b, "bob")
    await exchange_messages(alice, bob)
    await mutual_subscription(alice, bob)
    await remote_occupant(alice, bob, f"lounge@conference.{A}")
    await remote_occupant(bob, alice, f"lounge@conference.{B}")
    await bob.close()
    await alice.expect_presence(BOB, "unavailable")
    await alice.close()


def authenticated_with(server, method: str) -> bool:
    return any("s2s outbound link authenticated" in line and f"method=\"{method}\"" in line
               for line in server.output().splitlines())


@async_test(timeout=120)
async def test_valid_certificates_federate_with_sasl_external(pair):
    server_a, server_b = pair(certs="valid")
    await federate(server_a, server_b)
    assert authenticated_with(server_a, "EXTERNAL"), server_a.output()
    assert authenticated_with(server_b, "EXTERNAL"), server_b.output()


@async_test(timeout=120)
async def test_certificates_the_peer_cannot_validate_federate_with_dialback(pair):
    server_a, server_b = pair(certs="untrusted")
    await federate(server_a, server_b)
    assert authenticated_with(server_a, "dialback"), server_a.output()
    assert authenticated_with(server_b, "dialback"), server_b.output()
    assert not authenticated_with(server_a, "EXTERNAL")


async def refused(server_a, condition: str) -> None:
    """alice's message to bob comes back as an error with ``condition``."""
    alice = await login(server_a, "alice")
    alice.send_message(mto=BOB, mbody="anyone there?", mtype="chat")
    error = await alice.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.get("type") == "error"
        and e.get("from") == BOB, timeout=30, what="bounce")
    assert stanza_error(error) == condition, error
    await alice.close()


@async_test(timeout=120)
async def test_without_dialback_invalid_certificates_are_refused(pair):
    server_a, _ = pair(certs="untrusted", a={"s2s": {"dialback": False}},
                             b={"s2s": {"dialback": False}})
    await refused(server_a, "remote-server-not-found")


@async_test(timeout=120)
async def test_a_certificate_for_another_name_is_refused(pair):
    server_a, _ = pair(certs="wrong-name", a={"s2s": {"require_valid_certificates": True}})
    await refused(server_a, "remote-server-not-found")
    assert "not valid" in server_a.output()


@async_test(timeout=120)
async def test_federation_off_and_denied_domains_bounce(pair):
    server_a, _ = pair(a={"s2s": {"deny": [B]}})
    await refused(server_a, "not-allowed")


@async_test(timeout=120)
async def test_federation_switched_off_bounces(pair):
    server_a, _ = pair(a={"s2s": {"enabled": False}})
    await refused(server_a, "remote-server-not-found")
