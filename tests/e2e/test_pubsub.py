"""The pubsub service (XEP-0060) on pubsub.localhost with slixmpp's xep_0060 plugin: listed in
the server's disco#items, nodes created by local users (or administrators only, as
configured), subscriptions and affiliations, notifications with and without payloads.

That a stanza did NOT arrive is checked once the client's ping is answered: the server
queued whatever the publish caused before it answered the publisher, and handles the
client's own ping after that."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp.plugins.xep_0004 import Form

from clients import CLIENT_NS, async_test, login, q, settled
from test_pep import PUBSUB, PUBSUB_EVENT, error_of

SERVICE = "pubsub.localhost"


async def ps_client(server, user: str):
    def setup(client) -> None:
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0060")
    return await login(server, user, setup=setup)


def event_of(node: str):
    def match(e: ET.Element) -> bool:
        items = e.find(f"{q(PUBSUB_EVENT, 'event')}/{q(PUBSUB_EVENT, 'items')}")
        return (e.tag == q(CLIENT_NS, "message") and e.get("from") == SERVICE
                and items is not None and items.get("node") == node)
    return match


def config_form(**fields: str) -> Form:
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden",
                   value="http://jabber.org/protocol/pubsub#node_config")
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


@async_test()
async def test_the_service_is_listed_and_identifies_itself(server):
    alice = await ps_client(server, "alice")
    items = await alice.plugin["xep_0030"].get_items(jid=server.domain)
    assert SERVICE in [i[0] for i in items["disco_items"]["items"]]
    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE)
    assert ("pubsub", "service", None, None) in info["disco_info"]["identities"]
    assert f"{PUBSUB}#publish-options" in info["disco_info"]["features"]


@async_test()
async def test_subscribers_get_notifications_with_and_without_payloads(server):
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    carol = await ps_client(server, "carol")
    ps = alice.plugin["xep_0060"]
    await ps.create_node(SERVICE, "news")
    await ps.create_node(SERVICE, "pings", config=config_form(deliver_payloads="0"))
    for node in ("news", "pings"):
        sub = await bob.plugin["xep_0060"].subscribe(SERVICE, node)
        assert sub["pubsub"]["subscription"]["subscription"] == "subscribed"

    entry = ET.fromstring("<entry xmlns='http://www.w3.org/2005/Atom'><title>hello</title></entry>")
    await ps.publish(SERVICE, "news", id="first", payload=entry)
    ev = await bob.expect(event_of("news"), what="news notification")
    item = ev.find(f".//{q(PUBSUB_EVENT, 'item')}")
    assert item.get("id") == "first"
    assert item.find(".//{http://www.w3.org/2005/Atom}title").text == "hello"

    await ps.publish(SERVICE, "pings", id="p1", payload=entry)
    ev = await bob.expect(event_of("pings"), what="pings notification")
    item = ev.find(f".//{q(PUBSUB_EVENT, 'item')}")
    assert item.get("id") == "p1" and len(list(item)) == 0, "no payload on this node"

    # Lists: bob's subscriptions, alice's affiliations.
    subs = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>", to=SERVICE)
    assert sorted(s.get("node") for s in subs.iter(q(PUBSUB, "subscription"))) == ["news", "pings"]
    affs = await alice.iq("get", f"<pubsub xmlns='{PUBSUB}'><affiliations/></pubsub>", to=SERVICE)
    assert sorted((a.get("node"), a.get("affiliation"))
                  for a in affs.iter(q(PUBSUB, "affiliation"))) == [
        ("news", "owner"), ("pings", "owner")]

    # Unsubscribed, bob gets nothing more; carol, never subscribed, got nothing.
    await bob.plugin["xep_0060"].unsubscribe(SERVICE, "news")
    await ps.publish(SERVICE, "news", id="second", payload=entry)
    for client in (bob, carol):
        await settled(client)
        assert not [e for e in client.received if event_of("news")(e)], client.boundjid

    # Not the owner: forbidden to publish.
    reply = await carol.iq("set", f"<pubsub xmlns='{PUBSUB}'><publish node='news'><item>"
                                  "<x xmlns='urn:t'/></item></publish></pubsub>", to=SERVICE)
    assert error_of(reply)[0] == "forbidden"
    reply = await carol.iq("set", f"<pubsub xmlns='{PUBSUB}'><create node='news'/></pubsub>",
                           to=SERVICE)
    assert error_of(reply)[0] == "conflict"

    # Deleting a node tells its subscribers (§8.4.2), whose subscriptions go with it.
    await ps.delete_node(SERVICE, "pings")
    await bob.expect(lambda e: e.get("from") == SERVICE and e.find(
        f".//{q(PUBSUB_EVENT, 'delete')}[@node='pings']") is not None, what="delete notification")
    subs = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><subscriptions/></pubsub>", to=SERVICE)
    assert [s.get("node") for s in subs.iter(q(PUBSUB, "subscription"))] == []


@async_test()
async def test_only_admins_create_when_so_configured(make_server):
    server = make_server(server={"admins": ["alice@localhost"]}, pubsub={"create": "admins"})
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    reply = await bob.iq("set", f"<pubsub xmlns='{PUBSUB}'><create node='b'/></pubsub>",
                         to=SERVICE)
    assert error_of(reply)[0] == "forbidden"
    reply = await alice.iq("set", f"<pubsub xmlns='{PUBSUB}'><create/></pubsub>", to=SERVICE)
    assert reply.get("type") == "result", ET.tostring(reply)
    created = reply.find(f".//{q(PUBSUB, 'create')}")
    assert created is not None and created.get("node"), "an instant node's name comes back"
