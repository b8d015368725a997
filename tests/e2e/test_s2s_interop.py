"""Federation with the servers operators run: Prosody and ejabberd (s2s_fixture.py), one of
each for the module, resolved through the private DNS and authenticated with the test CA's
certificates.

First the harness checks itself without xmppd: a Prosody user and an ejabberd user exchange
messages, subscribe to each other's presence and join each other's chat rooms
(federation.py), both servers authenticating the other with SASL EXTERNAL. If that fails,
the tests of xmppd would fail for the harness's sake, not xmppd's.
"""

from __future__ import annotations

import pytest

from clients import async_test
from federation import everything
from s2s_fixture import QTYPE_A, QTYPE_SRV, Ejabberd, Prosody, S2sNetwork, dns_query, running

PROSODY, EJABBERD = "prosody.example", "ejabberd.example"


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    net = S2sNetwork(tmp_path_factory.mktemp("s2speers"), [PROSODY, EJABBERD])
    net.start()
    try:
        with running(Prosody(net, PROSODY), Ejabberd(net, EJABBERD)) as (prosody, ejabberd):
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
    _, prosody, ejabberd = federation
    await everything(prosody, ejabberd)
    # Both authenticated the other by its certificate (SASL EXTERNAL, XEP-0178), both ways.
    for server, other in ((prosody, ejabberd), (ejabberd, prosody)):
        auth = server.s2s_auth()
        assert {("in", other.domain, "EXTERNAL"), ("out", other.domain, "EXTERNAL")} <= auth, \
            (server.software, auth)
        assert not {a for a in auth if a[2] != "EXTERNAL"}, (server.software, auth)
