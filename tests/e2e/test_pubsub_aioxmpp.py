"""Personal eventing and the pubsub service through a second client library, aioxmpp: its
PEP client, which asks for notifications through its entity capabilities (the server checks
them with a disco#info query that aioxmpp answers), publishes to the account and is notified
of a contact's publish; its pubsub client creates a node on the service, publishes, lists
items and is notified as a subscriber. The other side is slixmpp each time."""

from __future__ import annotations

import asyncio
import contextlib
import xml.etree.ElementTree as ET

import aioxmpp
import aioxmpp.connector
import aioxmpp.pubsub.xso
import aioxmpp.xso as xso

from clients import STEP, async_test, q
from conftest import PASSWORD
from test_pep import A, B, TUNE, PUBSUB_EVENT, contacts, event_items, pep_client
from test_pubsub import SERVICE, event_of, ps_client
from test_roster_presence import subscribe


@aioxmpp.pubsub.xso.as_payload_class
class Tune(xso.XSO):
    TAG = (TUNE, "tune")
    title = xso.ChildText((TUNE, "title"), default=None)


class Entry(xso.XSO):
    TAG = ("urn:xmppd:test", "entry")
    text = xso.Text(default=None)


aioxmpp.pubsub.xso.as_payload_class(Entry)


def tune(title: str) -> Tune:
    t = Tune()
    t.title = title
    return t


@contextlib.asynccontextmanager
async def aioxmpp_client(server, user: str, notify=()):
    """An aioxmpp client, available, whose capabilities ask for ``notify``."""
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(server.jid(user)),
        aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[("127.0.0.1", server.starttls_port,
                        aioxmpp.connector.STARTTLSConnector())],
    )
    client.summon(aioxmpp.EntityCapsService)
    pep = client.summon(aioxmpp.PEPClient)
    claims = [pep.claim_pep_node(node, notify=True) for node in notify]
    async with client.connected(presence=aioxmpp.PresenceState(True)):
        yield client, claims


def collect(signal) -> asyncio.Queue:
    """A queue of what ``signal`` carries: (jid, node, item)."""
    queue: asyncio.Queue = asyncio.Queue()

    def arrived(jid, node, item, **_kw) -> None:
        queue.put_nowait((jid, node, item))

    signal.connect(arrived)
    return queue


@async_test(timeout=150.0)
async def test_aioxmpp_pep_publish_and_notify_with_slixmpp(server):
    alice = await pep_client(server, "alice", notify=[TUNE])
    bob = await pep_client(server, "bob", notify=[TUNE])
    await contacts(alice, bob)
    # And alice to bob's.
    await subscribe(alice, bob, A, B)
    reply = await alice.iq("set", f"<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                                  f"<publish node='{TUNE}'><item id='first'><tune xmlns='{TUNE}'>"
                                  "<title>Before</title></tune></item></publish></pubsub>")
    assert reply.get("type") == "result", ET.tostring(reply)
    await bob.close()

    async with aioxmpp_client(server, "bob", notify=[TUNE]) as (client, (claim,)):
        got = collect(claim.on_item_publish)
        # Once the server has checked aioxmpp's capabilities, the last tune comes (XEP-0163
        # §4.3.4), then each new one.
        jid, node, item = await asyncio.wait_for(got.get(), STEP)
        assert (str(jid), node, item.id_) == (A, TUNE, "first")
        assert item.registered_payload.title == "Before"
        reply = await alice.iq("set", f"<pubsub xmlns='http://jabber.org/protocol/pubsub'>"
                                      f"<publish node='{TUNE}'><item id='second'>"
                                      f"<tune xmlns='{TUNE}'><title>After</title></tune>"
                                      "</item></publish></pubsub>")
        assert reply.get("type") == "result"
        jid, node, item = await asyncio.wait_for(got.get(), STEP)
        assert (str(jid), item.id_, item.registered_payload.title) == (A, "second", "After")

        # aioxmpp publishes to its own account; slixmpp's alice is told.
        pep = client.summon(aioxmpp.PEPClient)
        assert await pep.available()
        await pep.publish(TUNE, tune("From aioxmpp"), id_="aio")
        ev = await alice.expect(lambda e: e.get("from") == B and event_items(TUNE)(e),
                                what="bob's tune")
        assert ev.find(f".//{q(PUBSUB_EVENT, 'item')}").get("id") == "aio"
        assert ev.find(f".//{q(TUNE, 'title')}").text == "From aioxmpp"


@async_test(timeout=150.0)
async def test_aioxmpp_on_the_pubsub_service_with_slixmpp(server):
    carol = await ps_client(server, "carol")
    service = aioxmpp.JID.fromstr(SERVICE)
    async with aioxmpp_client(server, "bob") as (client, _):
        ps = client.summon(aioxmpp.PubSubClient)
        features = await ps.get_features(service)
        assert aioxmpp.pubsub.xso.Feature.PUBLISH in features
        await ps.create(service, "aio")
        sub = await carol.plugin["xep_0060"].subscribe(SERVICE, "aio")
        assert sub["pubsub"]["subscription"]["subscription"] == "subscribed"
        # bob subscribes himself too, and hears of his own publish as carol does.
        await ps.subscribe(service, "aio")
        got = collect(ps.on_item_published)

        entry = Entry()
        entry.text = "hello"
        await ps.publish(service, "aio", entry, id_="e1")
        ev = await carol.expect(event_of("aio"), what="notification")
        assert ev.find(f".//{q(PUBSUB_EVENT, 'item')}").get("id") == "e1"
        jid, node, item = await asyncio.wait_for(got.get(), STEP)
        assert (str(jid), node, item.id_, item.registered_payload.text) == (
            SERVICE, "aio", "e1", "hello")

        items = await ps.get_items(service, "aio")
        assert [(i.id_, i.registered_payload.text) for i in items.payload.items] == [
            ("e1", "hello")]
        nodes = await ps.get_nodes(service)
        assert "aio" in [n for n, _ in nodes], nodes
