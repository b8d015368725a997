"""Federation with the servers operators run: Prosody and ejabberd (s2s_fixture.py), one of
each for the module, resolved through the private DNS and authenticated with the test CA's
certificates.

First the harness checks itself without xmppd: a Prosody user and an ejabberd user exchange
messages, subscribe to each other's presence and join each other's chat rooms
(federation.py), both servers authenticating the other with SASL EXTERNAL. If that fails,
the tests of xmppd would fail for the harness's sake, not xmppd's.

Then xmppd does the same with each of them, in both modes of authentication:
- ``external``: xmppd's certificate comes from the CA the peers trust and xmppd trusts it too,
  with dialback off and valid certificates required: only SASL EXTERNAL (XEP-0178) can work;
- ``dialback``: xmppd's certificate comes from a CA nobody trusts and xmppd trusts none of
  the peers' (the peers allow dialback for these domains): both sides fall back to dialback
  (XEP-0220), the receiving server checking the key with the authoritative one through DNS.
Once with xmppd sending the first stanza and once with the peer sending it, so each side's
streams open both before and after the other's. Each case is an xmppd of its own domain, so
no peer carries state from one case into the next.
"""

from __future__ import annotations

import asyncio
import subprocess
import xml.etree.ElementTree as ET

import pytest

from clients import CLIENT_NS, async_test, login, q, stanza_error
from federation import FIRST, everything, exchange_messages
from s2s_fixture import (
    QTYPE_A,
    QTYPE_SRV,
    Ejabberd,
    Prosody,
    S2sNetwork,
    dns_query,
    running,
    start_xmppd,
)

PROSODY, EJABBERD = "prosody.example", "ejabberd.example"
# (peer, mode, who sends first), each served by an xmppd of its own domain.
CASES = [(peer, mode, first) for peer in ("prosody", "ejabberd")
         for mode in ("external", "dialback") for first in ("xmppd", "peer")]


# An xmppd whose certificate, from the trusted CA, names another domain.
WRONG_NAME = "xmppd-wrong-name.example"
# Prosody with bidirectional streams (XEP-0288), and an xmppd, per side sending first.
BIDI = {first: (f"prosody-bidi-{first}.example", f"xmppd-bidi-{first}.example")
        for first in ("xmppd", "peer")}
# An xmppd pinging each peer's domain.
PINGING = {peer: f"xmppd-ping-{peer}.example" for peer in ("prosody", "ejabberd")}


def case_domain(case: tuple[str, str, str]) -> str:
    return f"xmppd-{CASES.index(case)}.example"


def case_id(case: tuple[str, str, str]) -> str:
    peer, mode, first = case
    return f"{peer}-{mode}-{first}-first"


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    domains = [PROSODY, EJABBERD, *(case_domain(c) for c in CASES), WRONG_NAME,
               *(d for pair in BIDI.values() for d in pair), *PINGING.values()]
    net = S2sNetwork(tmp_path_factory.mktemp("s2speers"), domains)
    net.start()
    # Prosody requires certificates (s2s_secure_auth) except from the dialback cases'
    # domains; ejabberd falls back to dialback where a certificate does not do.
    insecure = tuple(name for c in CASES if c[1] == "dialback"
                     for name in net.peers[case_domain(c)].names)
    try:
        with running(Prosody(net, PROSODY, insecure_domains=insecure),
                     Ejabberd(net, EJABBERD)) as (prosody, ejabberd):
            yield net, prosody, ejabberd
    finally:
        net.stop()


def test_dns_serves_the_plan(federation):
    net, _, _ = federation
    for domain in (PROSODY, EJABBERD):
        assert dns_query(net.dns_address, f"_xmpp-server._tcp.{domain}", QTYPE_SRV) == (0, 1)
        assert dns_query(net.dns_address, f"_xmpp-server._tcp.conference.{domain}",
                         QTYPE_SRV) == (0, 1)
        assert dns_query(net.dns_address, f"upload.{domain}", QTYPE_A) == (0, 1)
    # Names it was not given are NXDOMAIN (3), never forwarded.
    assert dns_query(net.dns_address, "elsewhere.example", QTYPE_A)[0] == 3


@async_test(timeout=170)
async def test_prosody_and_ejabberd_federate(federation):
    net, prosody, ejabberd = federation
    await everything(prosody, ejabberd)
    # Both authenticated the other by its certificate (SASL EXTERNAL, XEP-0178), both ways.
    for server, other in ((prosody, ejabberd), (ejabberd, prosody)):
        expected = {("in", other.domain, "EXTERNAL"), ("out", other.domain, "EXTERNAL")}
        auth = await server.s2s_auth_of(net.peers[other.domain].names, expected)
        assert expected <= auth, (server.software, auth, str(server.log))
        assert {a[2] for a in auth} == {"EXTERNAL"}, (server.software, auth, str(server.log))


@pytest.mark.parametrize("case", CASES, ids=case_id)
@async_test(timeout=170)
async def test_xmppd_federates(federation, make_server, case):
    net, prosody, ejabberd = federation
    peer_name, mode, first = case
    peer = prosody if peer_name == "prosody" else ejabberd
    domain = case_domain(case)
    if mode == "external":
        xmppd = start_xmppd(make_server, net, domain, dialback=False,
                            require_valid_certificates=True)
    else:
        xmppd = start_xmppd(make_server, net, domain, trusted=False, dialback=True,
                            require_valid_certificates=False)
    if first == "xmppd":
        await everything(xmppd, peer)
    else:
        await everything(peer, xmppd)
    # The peer's own account of how each stream with xmppd's domain and its chat service
    # was authenticated: both directions, and only the mode under test.
    method = "EXTERNAL" if mode == "external" else "dialback"
    expected = {("in", domain, method), ("out", domain, method),
                ("in", f"conference.{domain}", method)}
    auth = await peer.s2s_auth_of(net.peers[domain].names, expected)
    # Once (ejabberd, dialback, the chat service's stream after its SASL EXTERNAL failed)
    # the peer never logged an inbound stream xmppd saw it accept: xmppd's own account of
    # that link, with the same method, stands in for the peer's missing line.
    room_link = f"local=conference.{domain} remote={peer.domain} method=\"{method}\""
    if any("s2s outbound link authenticated" in line and room_link in line
           for line in xmppd.output().splitlines()):
        auth.add(("in", f"conference.{domain}", method))
    assert expected <= auth, (peer.software, auth, str(peer.log))
    assert {a[2] for a in auth} == {method}, (peer.software, auth, str(peer.log))


def is_error_reply(body: str):
    def match(e) -> bool:
        return (e.tag == q(CLIENT_NS, "message") and e.get("type") == "error"
                and e.findtext(q(CLIENT_NS, "body")) in (None, body))
    return match


@async_test(timeout=170)
async def test_a_certificate_for_another_name_is_refused_both_ways(federation, make_server):
    """xmppd presents a certificate of the trusted CA for another name, with dialback off:
    Prosody, which requires certificates, does not authenticate it, and neither does xmppd
    accept a stream Prosody cannot authenticate. Each sender gets an error back; nothing is
    delivered."""
    net, prosody, _ = federation
    xmppd = start_xmppd(make_server, net, WRONG_NAME, cert=net.wrong_name_cert(),
                        dialback=False, require_valid_certificates=True)
    x = await login(xmppd, "alice")
    p = await login(prosody, "alice")
    try:
        x.chat(prosody.jid("alice"), "through a wrong certificate")
        error = await x.expect(is_error_reply("through a wrong certificate"), timeout=FIRST,
                               what="an error for the message")
        assert stanza_error(error) is not None, ET.tostring(error, "unicode")
        p.chat(xmppd.jid("alice"), "to a wrong certificate")
        error = await p.expect(is_error_reply("to a wrong certificate"), timeout=FIRST,
                               what="an error for the message")
        assert stanza_error(error) is not None, ET.tostring(error, "unicode")
        await x.expect_none(lambda e: e.findtext(q(CLIENT_NS, "body")) == "to a wrong certificate")
        await p.expect_none(lambda e: e.findtext(q(CLIENT_NS, "body"))
                            == "through a wrong certificate" and e.get("type") != "error")
    finally:
        await x.close()
        await p.close()


def established(*listeners: tuple[str, int]) -> int:
    """The established TCP connections to any of ``listeners`` (``ss``; each connection is
    seen from both ends, counted once)."""
    names = {f"{address}:{port}" for address, port in listeners}
    out = subprocess.run(["ss", "-Htn", "state", "established"], capture_output=True,
                         text=True, check=True).stdout
    seen = set()
    for line in out.splitlines():
        local, peer = line.split()[-2:]
        if local in names or peer in names:
            seen.add(frozenset((local, peer)))
    return len(seen)


@pytest.mark.parametrize("first", list(BIDI))
@async_test(timeout=170)
async def test_prosody_with_bidi_and_xmppd_share_one_connection(federation, make_server,
                                                                first):
    """Prosody 0.12 with its ``s2s_bidi`` module: a message each way between its user and
    xmppd's goes over the one stream the first sender's server opened (XEP-0288)."""
    net, _, _ = federation
    prosody_domain, domain = BIDI[first]
    with running(Prosody(net, prosody_domain, bidi=True)) as (prosody,):
        xmppd = start_xmppd(make_server, net, domain, dialback=False,
                            require_valid_certificates=True)
        x = await login(xmppd, "alice")
        p = await login(prosody, "alice")
        try:
            if first == "xmppd":
                await exchange_messages(x, p)
            else:
                await exchange_messages(p, x)
        finally:
            await x.close()
            await p.close()
        log = xmppd.output().splitlines()
        pair = f"local={domain} remote={prosody_domain}"
        outbound = [line for line in log
                    if "s2s outbound link authenticated" in line and pair in line]
        adopted = [line for line in log if "s2s link bidirectional" in line and pair in line]
        if first == "xmppd":
            assert len(outbound) == 1 and "bidi=true" in outbound[0], log
        else:
            assert adopted and not outbound, log
        listeners = [(net.peers[d].address, net.peers[d].s2s_port)
                     for d in (domain, prosody_domain)]
        assert established(*listeners) == 1, subprocess.run(
            ["ss", "-tn"], capture_output=True, text=True).stdout


@pytest.mark.parametrize("peer_name", list(PINGING))
@async_test(timeout=170)
async def test_peers_answer_xmppd_pings(federation, make_server, peer_name):
    """xmppd pings its silent link to the peer (XEP-0199) every second; the peer answers to
    xmppd's domain, over its own link, and the link stays up."""
    net, prosody, ejabberd = federation
    peer = prosody if peer_name == "prosody" else ejabberd
    domain = PINGING[peer_name]
    xmppd = start_xmppd(make_server, net, domain, dialback=False,
                        require_valid_certificates=True, ping_interval_secs=1,
                        ping_timeout_secs=30)
    x = await login(xmppd, "alice")
    p = await login(peer, "alice")
    try:
        await exchange_messages(x, p)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        pair = f"local={domain} remote={peer.domain}"

        def answered() -> int:
            return sum(1 for line in xmppd.output().splitlines()
                       if "s2s link answered a ping" in line and pair in line)
        while answered() < 3:
            assert loop.time() < deadline, xmppd.output()
            await asyncio.sleep(0.2)
        assert "did not answer a ping" not in xmppd.output()
        await exchange_messages(x, p, " still")
    finally:
        await x.close()
        await p.close()
