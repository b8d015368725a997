"""The message archive through a second client library, aioxmpp: it pages an account's archive
forward to the end and backward from the latest page (an empty ``<before/>``), and must see
the archive ids slixmpp saw on the delivered messages.

aioxmpp 0.13 has XEP-0059 (``aioxmpp.rsm.xso``), XEP-0297 forwarding and XEP-0203 delays but no
XEP-0313 module; the MAM elements are declared here as XSOs, the library's own way to add a
payload, and everything else (stream, TLS, SASL, IQ tracking, message dispatch, RSM paging) is
aioxmpp's."""

from __future__ import annotations

import contextlib

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher
import aioxmpp.misc
import aioxmpp.rsm.xso
import aioxmpp.xso as xso

from clients import async_test, login, q, settled
from conftest import PASSWORD
from test_mam import SID

MAM = "urn:xmpp:mam:2"


@aioxmpp.IQ.as_payload_class
class Query(xso.XSO):
    TAG = (MAM, "query")
    queryid = xso.Attr("queryid", default=None)
    rsm = xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])


@aioxmpp.IQ.as_payload_class
class Fin(xso.XSO):
    TAG = (MAM, "fin")
    complete = xso.Attr("complete", type_=xso.Bool(), default=False)
    rsm = xso.Child([aioxmpp.rsm.xso.ResultSetMetadata])


class Result(xso.XSO):
    TAG = (MAM, "result")
    queryid = xso.Attr("queryid", default=None)
    id_ = xso.Attr("id")
    forwarded = xso.Child([aioxmpp.misc.Forwarded])


aioxmpp.Message.xep0313_result = xso.Child([Result])


@contextlib.asynccontextmanager
async def aioxmpp_client(server, user: str):
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(server.jid(user)),
        aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[("127.0.0.1", server.starttls_port,
                        aioxmpp.connector.STARTTLSConnector())],
    )
    async with client.connected():
        yield client


class Archive:
    """Queries the own archive; collects the results that arrive before each answer."""

    def __init__(self, client) -> None:
        self.client = client
        self.arrived: list[Result] = []
        self.count = 0
        client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher).register_callback(
            aioxmpp.MessageType.NORMAL, None, self._on_message)

    def _on_message(self, msg) -> None:
        if msg.xep0313_result is not None:
            self.arrived.append(msg.xep0313_result)

    async def page(self, rsm) -> tuple[list[tuple[str, str]], Fin]:
        """One page: [(archive id, body)] oldest first, and the <fin/>."""
        self.count += 1
        queryid = f"aio{self.count}"
        query = Query()
        query.queryid, query.rsm = queryid, rsm
        fin = await self.client.send(aioxmpp.IQ(type_=aioxmpp.IQType.SET, payload=query))
        # aioxmpp hands stanzas to their handlers in the order they arrive: the results came
        # before the IQ's answer (XEP-0313 §4.2).
        mine = [r for r in self.arrived if r.queryid == queryid]
        self.arrived = [r for r in self.arrived if r.queryid != queryid]
        return [(r.id_, r.forwarded.stanza.body.any()) for r in mine], fin


@async_test(timeout=150.0)
async def test_aioxmpp_pages_the_archive_both_ways_with_slixmpps_ids(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    sent = [f"note {i}" for i in range(13)]
    for text in sent:
        alice.chat("bob@localhost", text)
    seen = []
    for text in sent:
        delivered = await bob.expect_message(text)
        seen.append((delivered.find(q(SID, "stanza-id")).get("id"), text))
    await settled(alice)

    async with aioxmpp_client(server, "bob") as client:
        archive = Archive(client)
        rsm = aioxmpp.rsm.xso.ResultSetMetadata.limit(5)
        forward, pages = [], 0
        while True:
            items, fin = await archive.page(rsm)
            forward += items
            pages += 1
            if fin.complete:
                break
            assert len(items) == 5, items
            rsm = fin.rsm.next_page(5)
        assert forward == seen and pages == 3

        rsm = aioxmpp.rsm.xso.ResultSetMetadata.last_page(5)
        backward, pages = [], 0
        while True:
            items, fin = await archive.page(rsm)
            if pages == 0:
                assert items == seen[-5:], "the latest page"
                assert fin.rsm.first.value == seen[-5][0] and fin.rsm.last.value == seen[-1][0]
            backward = items + backward
            pages += 1
            if fin.complete:
                break
            rsm = fin.rsm.previous_page(5)
        assert backward == seen and pages == 3
