"""Federation (RFC 6120 server-to-server) between two xmppd servers, a.example and
b.example, each on its own loopback address, finding each other through a real DNS server
(dnsmasq, SRV and A records) and holding certificates of a test CA (``S2sNetwork`` of
``s2s_fixture.py``). Users of each exchange presence subscriptions and messages both ways,
authenticated with SASL EXTERNAL (valid certificates) or dialback (certificates the other side
cannot validate); refusals reach the sender as errors."""

from __future__ import annotations

import asyncio
import base64
import re
import subprocess
import ssl
import time
import xml.etree.ElementTree as ET

import pytest

from clients import CLIENT_NS, async_test, login, q, settled, stanza_error
from federation import FIRST, exchange_messages, mutual_subscription, remote_occupant
from raw import SASL_NS, STREAM_NS, TLS_NS, RawClient, StreamClosed, stream_error_condition
from s2s_fixture import S2sNetwork
from test_pep import TUNE, event_items, pep_client, tune

A, B = "a.example", "b.example"
ALICE, BOB = f"alice@{A}", f"bob@{B}"
BIDI_NS, BIDI_FEATURE_NS = "urn:xmpp:bidi", "urn:xmpp:features:bidi"
SERVER_NS, PING_NS = "jabber:server", "urn:xmpp:ping"



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
                "server": {"hosts": [domain], **overrides.get("server", {})},
                "tls": {"certificate": [
                    {"domain": domain, "cert": str(leaf.cert), "key": str(leaf.key)}]},
                "s2s": {"enabled": True, "listen": [f"{peer.address}:{peer.s2s_port}"],
                        "resolver": f"{net.dns_address}:53", "ca_file": str(net.ca_file),
                        # The network is on loopback addresses (refused by default).
                        "allow_private_addresses": True,
                        **overrides.get("s2s", {})},
            }
            server = make_server(**config)
            server.s2s_address, server.leaf = (peer.address, peer.s2s_port), leaf
            servers.append(server)
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
    # An authenticated stream takes stanzas beyond the limits before login (8 KiB).
    alice = await login(server_a, "alice")
    bob = await login(server_b, "bob")
    body = "x" * 20_000
    alice.send_message(mto=BOB, mbody=body, mtype="chat")
    await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.findtext(q(CLIENT_NS, "body")) == body,
        timeout=30, what="a 20 kB message")
    await alice.close()
    await bob.close()


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


@async_test(timeout=120)
async def test_messages_from_remote_senders_wait_offline_and_iqs_reach_full_jids(pair):
    server_a, server_b = pair()
    bob = await login(server_b, "bob")
    bob.register_plugin("xep_0199")
    alice = await login(server_a, "alice", presence=False)
    # An IQ to a full JID on the other server, answered by the client there.
    pong = await alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=str(bob.boundjid),
                          timeout=30)
    assert pong.get("type") == "result" and pong.get("from") == str(bob.boundjid), \
        ET.tostring(pong)
    await alice.close()
    # alice is offline: bob's message waits in her offline storage.
    bob.chat(ALICE, "while you were away")
    # a.example handles what comes over one stream in order: once it answered a ping sent
    # after the message, the message is stored.
    pong = await bob.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=A, timeout=30)
    assert pong.get("type") == "result", ET.tostring(pong)
    alice = await login(server_a, "alice")
    await alice.expect_message("while you were away", BOB)
    await alice.close()
    await bob.close()


@async_test(timeout=120)
async def test_strangers_can_be_refused(pair):
    server_a, server_b = pair(a={"s2s": {"refuse_strangers": True}})
    bob = await login(server_b, "bob")
    bob.chat(ALICE, "buy now")
    error = await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.get("type") == "error",
        timeout=30, what="bounce")
    assert stanza_error(error) == "service-unavailable", ET.tostring(error)
    await bob.close()


HEADER_B_TO_A = ("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
                 f"xmlns:stream='{STREAM_NS}' xmlns:db='jabber:server:dialback' "
                 f"from='{B}' to='{A}' version='1.0'>")
DIALBACK_NS = "jabber:server:dialback"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def s2s_raw(server_a, source: str | None = None) -> RawClient:
    """A connection to a.example's server-to-server listener (from ``source``)."""
    return RawClient(server_a.s2s_address[1], host=server_a.s2s_address[0], source=source)


def s2s_tls(server_a, cert=None, source: str | None = None) -> RawClient:
    """A stream from b.example to a.example up to the features after STARTTLS, presenting
    ``cert`` (a ``Leaf``) or no certificate."""
    raw = s2s_raw(server_a, source)
    raw.open(header=HEADER_B_TO_A)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert is not None:
        ctx.load_cert_chain(cert.cert, cert.key)
    raw.starttls(ctx)
    raw.open(header=HEADER_B_TO_A)
    return raw


def s2s_peer(server_a, server_b, *, bidi: bool = False, source: str | None = None
             ) -> RawClient:
    """A hand-driven server-to-server stream from b.example to a.example, authenticated with
    SASL EXTERNAL and b.example's certificate; made bidirectional first (XEP-0288) if
    ``bidi``."""
    header = HEADER_B_TO_A
    raw = s2s_raw(server_a, source)
    features = raw.open(header=header)
    assert features.find(q(TLS_NS, "starttls")) is not None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(server_b.leaf.cert, server_b.leaf.key)
    raw.starttls(ctx)
    features = raw.open(header=header)
    mechanisms = [m.text for m in features.iter(q(SASL_NS, "mechanism"))]
    assert "EXTERNAL" in mechanisms, ET.tostring(features)
    if bidi:
        assert features.find(q(BIDI_FEATURE_NS, "bidi")) is not None, ET.tostring(features)
        raw.send(f"<bidi xmlns='{BIDI_NS}'/>")
    authzid = base64.b64encode(B.encode()).decode()
    raw.send(f"<auth xmlns='{SASL_NS}' mechanism='EXTERNAL'>{authzid}</auth>")
    raw.expect(q(SASL_NS, "success"))
    raw.open(header=header)
    return raw


@async_test(timeout=120)
async def test_a_peer_cannot_send_from_or_to_domains_it_has_no_right_to(pair):
    server_a, server_b = pair()
    alice = await login(server_a, "alice")
    raw = s2s_peer(server_a, server_b)
    raw.send(f"<message from='bob@{B}/raw' to='{ALICE}' type='chat'><body>real</body></message>")
    await alice.expect_message("real", BOB)
    raw.send(f"<message from='mallory@evil.example' to='{ALICE}' type='chat'>"
             "<body>spoofed</body></message>")
    assert raw.expect_stream_error() == "invalid-from"
    raw = s2s_peer(server_a, server_b)
    raw.send(f"<message from='bob@{B}/raw' to='carol@elsewhere.example'><body>x</body></message>")
    assert raw.expect_stream_error() == "host-unknown"
    await alice.expect_none(lambda e: e.findtext(q(CLIENT_NS, "body")) == "spoofed")
    await alice.close()


@async_test(timeout=120)
async def test_the_direct_tls_listener_speaks_xmpp_server_with_alpn(pair):
    address = "127.0.0.1"
    server_a, server_b = pair(a={"s2s": {"direct_tls_listen": [f"{address}:0"]}})
    found = re.search(r"xmppd listening: s2s-direct-tls \S+:(\d+)", server_a.output())
    assert found, server_a.output()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["xmpp-server"])
    ctx.load_cert_chain(server_b.leaf.cert, server_b.leaf.key)
    raw = RawClient(int(found.group(1)), host=address, direct_tls=True, tls_context=ctx)
    assert raw.sock.selected_alpn_protocol() == "xmpp-server"
    features = raw.open(header=(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
        f"xmlns:stream='{STREAM_NS}' from='{B}' to='{A}' version='1.0'>"))
    mechanisms = [m.text for m in features.iter(q(SASL_NS, "mechanism"))]
    assert mechanisms == ["EXTERNAL"], ET.tostring(features)
    raw.close()


async def tune_reaches(publisher, contact, title: str) -> None:
    """``publisher`` publishes a tune; ``contact``, on the other server, is notified."""
    await publisher.plugin["xep_0060"].publish(
        str(publisher.boundjid.bare), TUNE, payload=ET.fromstring(tune(title)))
    owner = str(publisher.boundjid.bare)
    event = await contact.expect(
        lambda e: event_items(TUNE)(e) and e.get("from") == owner
        and any(t.text == title for t in e.iter(f"{{{TUNE}}}title")),
        timeout=FIRST, what=f"{owner}'s tune {title!r}")
    assert event.get("to") in (str(contact.boundjid), str(contact.boundjid.bare)), \
        ET.tostring(event)


@async_test(timeout=120)
async def test_personal_events_reach_contacts_on_the_other_server(pair):
    """XEP-0163 across servers: alice@a and bob@b, subscribed both ways, each with
    capabilities asking for tunes (+notify), receive the other's tune as it is published."""
    server_a, server_b = pair()
    alice = await pep_client(server_a, "alice", notify=[TUNE])
    bob = await pep_client(server_b, "bob", notify=[TUNE])
    await mutual_subscription(alice, bob)
    await tune_reaches(bob, alice, "Across the Universe")
    await tune_reaches(alice, bob, "Come Together")
    # A new resource of bob's, asking for tunes, gets alice's last one from a.example
    # (XEP-0163 §4.3.4).
    await bob.close()
    bob = await pep_client(server_b, "bob", notify=[TUNE])
    await bob.expect(
        lambda e: event_items(TUNE)(e) and e.get("from") == ALICE
        and any(t.text == "Come Together" for t in e.iter(f"{{{TUNE}}}title")),
        timeout=FIRST, what="alice's last tune")
    await alice.close()
    await bob.close()


def s2s_connections(server_a, server_b) -> int:
    """The established TCP connections to either server's s2s listener (``ss``; each
    connection is seen from both ends, counted once)."""
    listeners = {f"{address}:{port}" for address, port in (server_a.s2s_address,
                                                           server_b.s2s_address)}
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    seen = set()
    for line in out.splitlines():
        local, peer = line.split()[-2:]
        if local in listeners or peer in listeners:
            seen.add(frozenset((local, peer)))
    return len(seen)


async def one_connection(server_a, server_b) -> int:
    """The number of s2s connections between the two servers once the ones that only
    verified a dialback key are gone (they close right after their answer; the links stay
    up for ``idle_timeout_secs``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while (n := s2s_connections(server_a, server_b)) != 1 and loop.time() < deadline:
        await asyncio.sleep(0.1)
    return n


async def bidirectional(server_a, server_b, method: str) -> None:
    """alice@a writes first, so a.example opens the link; bob@b's answer goes back over it:
    one TCP connection, which b.example logs as bidirectional, and no link of its own."""
    alice = await login(server_a, "alice")
    bob = await login(server_b, "bob")
    await exchange_messages(alice, bob)
    assert await one_connection(server_a, server_b) == 1, \
        subprocess.run(["ss", "-tn"], capture_output=True, text=True).stdout
    out = await server_a.wait_for_log("s2s outbound link authenticated")
    assert len(out) == 1 and f'method="{method}"' in out[0] and "bidi=true" in out[0], out
    back = await server_b.wait_for_log("s2s link bidirectional")
    assert any(f"local={B} remote={A}" in line and 'direction="inbound"' in line
               for line in back), back
    assert not server_b.log_lines("s2s outbound link authenticated"), server_b.output()
    # And again, the other server first: still the same connection.
    await exchange_messages(bob, alice, " again")
    assert await one_connection(server_a, server_b) == 1
    await alice.close()
    await bob.close()


@async_test(timeout=120)
async def test_one_connection_carries_both_directions_with_sasl_external(pair):
    server_a, server_b = pair(certs="valid")
    await bidirectional(server_a, server_b, "EXTERNAL")


@async_test(timeout=120)
async def test_one_connection_carries_both_directions_with_dialback(pair):
    server_a, server_b = pair(certs="untrusted")
    await bidirectional(server_a, server_b, "dialback")


@async_test(timeout=120)
async def test_without_bidi_each_server_opens_its_own_link(pair):
    server_a, server_b = pair(b={"s2s": {"bidi": False}})
    alice = await login(server_a, "alice")
    bob = await login(server_b, "bob")
    await exchange_messages(alice, bob)
    assert "bidi=false" in (await server_a.wait_for_log("s2s outbound link authenticated"))[0]
    assert await server_b.wait_for_log("s2s outbound link authenticated")
    assert s2s_connections(server_a, server_b) == 2
    await alice.close()
    await bob.close()


@async_test(timeout=120)
async def test_a_bidirectional_peer_cannot_send_from_domains_it_has_no_right_to(pair):
    server_a, server_b = pair()
    alice = await login(server_a, "alice")
    raw = s2s_peer(server_a, server_b, bidi=True)
    raw.send(f"<message from='bob@{B}/raw' to='{ALICE}' type='chat'><body>real</body></message>")
    await alice.expect_message("real", BOB)
    # alice's answer comes back over the peer's own stream.
    alice.chat(f"bob@{B}/raw", "back to you")
    # Routed once a.example answered the ping after it (the raw peer's reads block the loop).
    await settled(alice)
    reply = raw.wait_for(lambda e: e.tag == q(SERVER_NS, "message"), timeout=30)
    assert reply.get("from", "").startswith(ALICE) and reply.get("to") == f"bob@{B}/raw", \
        ET.tostring(reply)
    raw.send(f"<message from='mallory@conference.{B}' to='{ALICE}' type='chat'>"
             "<body>spoofed</body></message>")
    assert raw.expect_stream_error() == "invalid-from"
    await alice.expect_none(lambda e: e.findtext(q(CLIENT_NS, "body")) == "spoofed")
    await alice.close()


def is_ping(e: ET.Element) -> bool:
    return (e.tag == q(SERVER_NS, "iq") and e.get("type") == "get"
            and e.find(q(PING_NS, "ping")) is not None)


PINGING = {"s2s": {"ping_interval_secs": 2, "ping_timeout_secs": 1}}


@async_test(timeout=120)
async def test_a_silent_link_is_pinged_and_closed_when_the_ping_goes_unanswered(pair):
    server_a, server_b = pair(a=PINGING)
    raw = s2s_peer(server_a, server_b, bidi=True)
    ping = raw.wait_for(is_ping, timeout=30)
    assert (ping.get("from"), ping.get("to")) == (A, B), ET.tostring(ping)
    assert raw.expect_stream_error(timeout=30) == "connection-timeout"
    # The server logs the reason as it sends the stream error.
    await server_a.wait_for_log("no answer to a ping", timeout=15)


@async_test(timeout=120)
async def test_a_peer_that_answers_pings_stays_connected(pair):
    """The ping timeout (1 s) is shorter than the interval (2 s): had an answer been
    ignored, the stream would end before the next ping."""
    server_a, server_b = pair(a=PINGING)
    raw = s2s_peer(server_a, server_b, bidi=True)
    ping = raw.wait_for(is_ping, timeout=30)
    raw.send(f"<iq type='result' id='{ping.get('id')}' from='{B}' to='{A}'/>")
    ping = raw.wait_for(is_ping, timeout=30)
    # An error answers as well as a result (XEP-0199 §4.3: a peer without pings).
    raw.send(f"<iq type='error' id='{ping.get('id')}' from='{B}' to='{A}'>"
             "<error type='cancel'><service-unavailable "
             "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    raw.wait_for(is_ping, timeout=30)
    raw.close()


@async_test(timeout=120)
async def test_one_way_links_are_pinged_and_answered_over_the_other_link(pair):
    """Without bidirectional streams, b.example answers a.example's ping over its own link
    to a.example, which a.example matches with the ping: the link stays up."""
    quiet = {"server": {"log_level": "debug"},
             "s2s": {"bidi": False, "ping_interval_secs": 1, "ping_timeout_secs": 30}}
    server_a, server_b = pair(a=quiet, b=quiet)
    alice = await login(server_a, "alice")
    bob = await login(server_b, "bob")
    await exchange_messages(alice, bob)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    answered = f"local={A} remote={B}"
    while len(server_a.log_lines("s2s link answered a ping", answered)) < 3:
        assert loop.time() < deadline, server_a.output()
        await asyncio.sleep(0.2)
    assert not server_a.log_lines("did not answer a ping"), server_a.output()
    await exchange_messages(alice, bob, " still")
    await alice.close()
    await bob.close()


def closed_at_once(server_a, source: str) -> None:
    """A connection from ``source`` is closed by a.example without an answer."""
    raw = s2s_raw(server_a, source)
    try:
        features = raw.open(header=HEADER_B_TO_A)
    except (StreamClosed, ConnectionResetError, BrokenPipeError):
        return
    finally:
        raw.close()
    raise AssertionError(f"a connection from {source} was served: {ET.tostring(features)!r}")


@async_test(timeout=120)
async def test_inbound_connections_are_capped_in_total_and_before_authentication_per_address(
        pair):
    server_a, server_b = pair(a={"s2s": {"max_inbound": 4, "max_pending_per_ip": 2}})
    one, two, three = "127.0.0.201", "127.0.0.202", "127.0.0.203"
    alice = await login(server_a, "alice")
    # An authenticated stream no longer counts against its address...
    peer = s2s_peer(server_a, server_b, source=one)
    pending = [s2s_raw(server_a, one), s2s_raw(server_a, one)]
    for raw in pending:
        raw.open(header=HEADER_B_TO_A)
    # ...but two waiting for authentication are all one address may have.
    closed_at_once(server_a, one)
    pending.append(s2s_raw(server_a, two))
    pending[-1].open(header=HEADER_B_TO_A)
    # Four connections are open: the total is reached, whatever the address.
    closed_at_once(server_a, three)
    await server_a.wait_for_log("s2s max_pending_per_ip reached", one)
    await server_a.wait_for_log("s2s max_inbound reached", three)
    # Everyone else is still served.
    peer.send(f"<message from='bob@{B}/raw' to='{ALICE}' type='chat'><body>still here</body>"
              "</message>")
    await alice.expect_message("still here", BOB)
    for raw in [peer, *pending]:
        raw.close()
    await alice.close()


@async_test(timeout=120)
async def test_private_addresses_from_dns_are_refused_by_default(pair):
    server_a, _ = pair(a={"s2s": {"allow_private_addresses": False}})
    await refused(server_a, "remote-server-not-found")
    await server_a.wait_for_log("s2s link failed", "not a public address")


@async_test(timeout=120)
async def test_a_domain_that_failed_bounces_at_once_for_a_while(pair):
    server_a, _ = pair()
    alice = await login(server_a, "alice")

    async def bounced(to: str, body: str) -> None:
        alice.send_message(mto=to, mbody=body, mtype="chat")
        error = await alice.expect(
            lambda e: e.tag == q(CLIENT_NS, "message") and e.get("type") == "error"
            and e.get("from") == to, timeout=30, what=f"bounce of {body!r}")
        assert stanza_error(error) == "remote-server-not-found", ET.tostring(error)

    await bounced("carol@nowhere.example", "first")
    await bounced("carol@nowhere.example", "second")
    # A last failure, logged after whatever the second message caused.
    await bounced("dave@elsewhere.example", "third")
    await server_a.wait_for_log("s2s link failed", "elsewhere.example")
    # One attempt to reach nowhere.example; the second message bounced without one.
    attempts = [line for line in server_a.output().splitlines()
                if "s2s link failed" in line and "nowhere.example" in line]
    assert len(attempts) == 1, attempts
    await alice.close()


def dialback_result(raw: RawClient) -> ET.Element:
    return raw.wait_for(lambda e: e.tag == q(DIALBACK_NS, "result"), timeout=30)


@async_test(timeout=120)
async def test_dialback_with_a_wrong_key_is_invalid_and_other_failures_are_dialback_errors(
        pair):
    server_a, _ = pair()
    alice = await login(server_a, "alice")
    # No certificate: dialback is the only way.
    raw = s2s_tls(server_a)
    dialback = raw.features.find(q("urn:xmpp:features:dialback", "dialback"))
    assert dialback is not None and dialback.find(
        q("urn:xmpp:features:dialback", "errors")) is not None, ET.tostring(raw.features)
    # XEP-0220 §2.4: a target not served here is a dialback error; the stream goes on.
    raw.send(f"<db:result from='{B}' to='elsewhere.example'>00</db:result>")
    error = dialback_result(raw)
    assert error.get("type") == "error" and error.get("from") == "elsewhere.example", \
        ET.tostring(error)
    assert error.find(f"{q(SERVER_NS, 'error')}/{q(STANZAS_NS, 'item-not-found')}") \
        is not None, ET.tostring(error)
    # A key b.example's server did not give: invalid, and nothing from the stream is taken.
    raw.send(f"<db:result from='{B}' to='{A}'>{'0' * 64}</db:result>"
             f"<message from='bob@{B}/raw' to='{ALICE}' type='chat'><body>spoofed</body>"
             "</message>")
    result = dialback_result(raw)
    assert (result.get("type"), result.get("from"), result.get("to")) == ("invalid", A, B), \
        ET.tostring(result)
    assert raw.expect_stream_error() == "not-authorized"
    await alice.expect_none(lambda e: e.findtext(q(CLIENT_NS, "body")) == "spoofed")
    await alice.close()


@async_test(timeout=120)
async def test_one_stream_authenticates_at_most_max_domains_per_stream(pair):
    server_a, server_b = pair(a={"s2s": {"max_domains_per_stream": 1}})
    alice = await login(server_a, "alice")
    raw = s2s_peer(server_a, server_b)
    # b.example's certificate names conference.b.example too, so without the cap it would be
    # granted at once.
    raw.send(f"<db:result from='conference.{B}' to='{A}'>00</db:result>")
    error = dialback_result(raw)
    assert error.get("type") == "error", ET.tostring(error)
    assert error.find(f"{q(SERVER_NS, 'error')}/{q(STANZAS_NS, 'resource-constraint')}") \
        is not None, ET.tostring(error)
    raw.send(f"<message from='bob@{B}/raw' to='{ALICE}' type='chat'><body>one</body></message>")
    await alice.expect_message("one", BOB)
    raw.send(f"<message from='room@conference.{B}' to='{ALICE}'><body>two</body></message>")
    assert raw.expect_stream_error() == "invalid-from"
    await alice.close()


@async_test(timeout=120)
async def test_a_peer_that_keeps_talking_without_authenticating_is_dropped_at_the_deadline(
        pair):
    deadline = 2
    server_a, _ = pair(a={"s2s": {"handshake_timeout_secs": deadline}})
    raw = s2s_tls(server_a)
    started = time.monotonic()
    # Verification requests are answered, but they do not authenticate the stream: the
    # handshake deadline counts from the connection, not from the last element.
    condition = None
    while condition is None and time.monotonic() - started < 60:
        raw.send(f"<db:verify from='{B}' to='{A}' id='x'>00</db:verify>")
        try:
            answer = raw.next_element(timeout=5)
        except StreamClosed:
            break
        condition = stream_error_condition(answer)
        time.sleep(0.2)  # pacing the requests, not waiting for an event
    elapsed = time.monotonic() - started
    assert condition == "connection-timeout", (condition, elapsed)
    assert deadline - 0.5 <= elapsed < 30, elapsed
    assert raw.wait_closed(5.0)
