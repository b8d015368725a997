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
    for f in ("publish-options", "modify-affiliations", "manage-subscriptions",
              "member-affiliation", "outcast-affiliation", "publisher-affiliation"):
        assert f"{PUBSUB}#{f}" in info["disco_info"]["features"], f
    # An account's feature, not the service's.
    assert f"{PUBSUB}#pubsub-on-a-jid" not in info["disco_info"]["features"]


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


@async_test()
async def test_node_quotas_per_account_and_per_service(make_server):
    server = make_server(pubsub={"max_nodes": 1, "max_service_nodes": 2})
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    carol = await ps_client(server, "carol")

    def create(node: str) -> str:
        return f"<pubsub xmlns='{PUBSUB}'><create node='{node}'/></pubsub>"

    reply = await alice.iq("set", create("a1"), to=SERVICE)
    assert reply.get("type") == "result", ET.tostring(reply)
    # alice's own quota.
    assert error_of(await alice.iq("set", create("a2"), to=SERVICE)) == (
        "not-allowed", "max-nodes-exceeded")
    reply = await bob.iq("set", create("b1"), to=SERVICE)
    assert reply.get("type") == "result", ET.tostring(reply)
    # The service is full, whoever asks.
    assert error_of(await carol.iq("set", create("c1"), to=SERVICE)) == (
        "resource-constraint", "max-nodes-exceeded")
    # Once a node is deleted, there is room again.
    await alice.plugin["xep_0060"].delete_node(SERVICE, "a1")
    reply = await carol.iq("set", create("c1"), to=SERVICE)
    assert reply.get("type") == "result", ET.tostring(reply)


OWNER = "http://jabber.org/protocol/pubsub#owner"


def owner_xml(inner: str) -> str:
    return f"<pubsub xmlns='{OWNER}'>{inner}</pubsub>"


def event_child(node: str, name: str):
    """A notification from the service whose event is ``<name node='node'/>``."""
    def match(e: ET.Element) -> bool:
        child = e.find(f"{q(PUBSUB_EVENT, 'event')}/{q(PUBSUB_EVENT, name)}")
        return (e.tag == q(CLIENT_NS, "message") and e.get("from") == SERVICE
                and child is not None and child.get("node") == node)
    return match


def items_xml(node: str) -> str:
    return f"<pubsub xmlns='{PUBSUB}'><items node='{node}'/></pubsub>"


def publish_xml(node: str, item: str) -> str:
    return (f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'><item id='{item}'>"
            f"<x xmlns='urn:t'>{item}</x></item></publish></pubsub>")


def ok(reply: ET.Element) -> ET.Element:
    assert reply.get("type") == "result", ET.tostring(reply)
    return reply


@async_test()
async def test_owners_manage_affiliations(server):
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    carol = await ps_client(server, "carol")
    await alice.plugin["xep_0060"].create_node(
        SERVICE, "club", config=config_form(access_model="whitelist"))
    ok(await alice.iq("set", publish_xml("club", "one"), to=SERVICE))
    assert error_of(await bob.iq("get", items_xml("club"), to=SERVICE)) == (
        "not-allowed", "closed-node")

    # Only an owner reads or changes the list.
    change = owner_xml("<affiliations node='club'>"
                       "<affiliation jid='bob@localhost' affiliation='member'/>"
                       "<affiliation jid='carol@localhost/any' affiliation='outcast'/>"
                       "</affiliations>")
    assert error_of(await bob.iq("set", change, to=SERVICE))[0] == "forbidden"
    ok(await alice.iq("set", change, to=SERVICE))
    listed = ok(await alice.iq("get", owner_xml("<affiliations node='club'/>"), to=SERVICE))
    assert sorted((a.get("jid"), a.get("affiliation"))
                  for a in listed.iter(q(OWNER, "affiliation"))) == [
        ("alice@localhost", "owner"), ("bob@localhost", "member"),
        ("carol@localhost", "outcast")]

    # A member reads and subscribes to the whitelist node and sees its affiliation (§5.7);
    # an outcast is refused whatever the access model.
    ok(await bob.iq("get", items_xml("club"), to=SERVICE))
    ok(await bob.iq("set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='club' "
                           "jid='bob@localhost'/></pubsub>", to=SERVICE))
    mine = ok(await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><affiliations/></pubsub>",
                           to=SERVICE))
    assert [(a.get("node"), a.get("affiliation"))
            for a in mine.iter(q(PUBSUB, "affiliation"))] == [("club", "member")]
    assert error_of(await carol.iq("get", items_xml("club"), to=SERVICE))[0] == "forbidden"
    reply = await carol.iq("set", f"<pubsub xmlns='{PUBSUB}'><subscribe node='club' "
                                  "jid='carol@localhost'/></pubsub>", to=SERVICE)
    assert error_of(reply)[0] == "forbidden"

    # A member does not publish; a publisher does, and retracts, but does not configure.
    assert error_of(await bob.iq("set", publish_xml("club", "two"), to=SERVICE))[0] == "forbidden"
    ok(await alice.iq("set", owner_xml(
        "<affiliations node='club'><affiliation jid='bob@localhost' affiliation='publisher'/>"
        "</affiliations>"), to=SERVICE))
    ok(await bob.iq("set", publish_xml("club", "two"), to=SERVICE))
    reply = await bob.iq("get", owner_xml("<configure node='club'/>"), to=SERVICE)
    assert error_of(reply)[0] == "forbidden"

    # The creator stays owner; an affiliation xmppd does not have is said so; one entity
    # named twice is a bad request; nothing of a refused request is applied.
    for bad, expected in (
        ("<affiliation jid='alice@localhost' affiliation='none'/>", ("not-acceptable", None)),
        ("<affiliation jid='bob@localhost' affiliation='publish-only'/>",
         ("feature-not-implemented", "unsupported")),
        ("<affiliation jid='carol@localhost' affiliation='none'/>"
         "<affiliation jid='carol@localhost' affiliation='member'/>", ("bad-request", None)),
    ):
        reply = await alice.iq("set", owner_xml(f"<affiliations node='club'>{bad}</affiliations>"),
                               to=SERVICE)
        assert error_of(reply) == expected, ET.tostring(reply)
    listed = ok(await alice.iq("get", owner_xml("<affiliations node='club'/>"), to=SERVICE))
    assert ("carol@localhost", "outcast") in [
        (a.get("jid"), a.get("affiliation")) for a in listed.iter(q(OWNER, "affiliation"))]

    # Removed from the list (none), bob is a stranger again.
    ok(await alice.iq("set", owner_xml(
        "<affiliations node='club'><affiliation jid='bob@localhost' affiliation='none'/>"
        "</affiliations>"), to=SERVICE))
    assert error_of(await bob.iq("get", items_xml("club"), to=SERVICE))[0] == "not-allowed"


@async_test()
async def test_owners_manage_subscriptions(server):
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    await alice.plugin["xep_0060"].create_node(SERVICE, "news")

    def subs(*entries: tuple[str, str]) -> str:
        inner = "".join(f"<subscription jid='{j}' subscription='{s}'/>" for j, s in entries)
        return owner_xml(f"<subscriptions node='news'>{inner}</subscriptions>")

    assert error_of(await bob.iq("set", subs(("bob@localhost", "subscribed")),
                                 to=SERVICE))[0] == "forbidden"
    ok(await alice.iq("set", subs(("bob@localhost", "subscribed")), to=SERVICE))
    # §8.8.4: the entity is told.
    told = await bob.expect(event_child("news", "subscription"), what="subscription news")
    sub = told.find(f".//{q(PUBSUB_EVENT, 'subscription')}")
    assert (sub.get("jid"), sub.get("subscription")) == ("bob@localhost", "subscribed")
    listed = ok(await alice.iq("get", owner_xml("<subscriptions node='news'/>"), to=SERVICE))
    assert [(s.get("jid"), s.get("subscription"))
            for s in listed.iter(q(OWNER, "subscription"))] == [("bob@localhost", "subscribed")]
    # And gets what is published.
    ok(await alice.iq("set", publish_xml("news", "n1"), to=SERVICE))
    await bob.expect(event_of("news"), what="news notification")

    # A state the owner cannot set refuses the whole request.
    reply = await alice.iq("set", subs(("bob@localhost", "none"), ("carol@localhost", "pending")),
                           to=SERVICE)
    assert error_of(reply)[0] == "not-acceptable"
    listed = ok(await alice.iq("get", owner_xml("<subscriptions node='news'/>"), to=SERVICE))
    assert len(list(listed.iter(q(OWNER, "subscription")))) == 1

    bob.received.clear()
    ok(await alice.iq("set", subs(("bob@localhost", "none")), to=SERVICE))
    told = await bob.expect(event_child("news", "subscription"), what="subscription ended")
    assert told.find(f".//{q(PUBSUB_EVENT, 'subscription')}").get("subscription") == "none"
    listed = ok(await alice.iq("get", owner_xml("<subscriptions node='news'/>"), to=SERVICE))
    assert list(listed.iter(q(OWNER, "subscription"))) == []


@async_test()
async def test_configuration_deletion_and_purge_notifications(server):
    alice = await ps_client(server, "alice")
    bob = await ps_client(server, "bob")
    ps = alice.plugin["xep_0060"]
    await ps.create_node(SERVICE, "full", config=config_form(notify_config="1"))
    await ps.create_node(SERVICE, "bare", config=config_form(
        notify_config="1", deliver_payloads="0", notify_delete="0", notify_retract="0"))
    for node in ("full", "bare"):
        await bob.plugin["xep_0060"].subscribe(SERVICE, node)

    # §8.2.5.3: the new configuration with payloads, its news only without.
    await ps.set_node_config(SERVICE, "full", config_form(max_items="5"))
    ev = await bob.expect(event_child("full", "configuration"), what="configuration news")
    fields = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in ev.iter("{jabber:x:data}field")}
    assert fields["pubsub#max_items"] == "5", fields
    await ps.set_node_config(SERVICE, "bare", config_form(max_items="5"))
    ev = await bob.expect(event_child("bare", "configuration"), what="configuration news")
    assert len(list(ev.find(f".//{q(PUBSUB_EVENT, 'configuration')}"))) == 0

    # §8.5.2: one purge notification where retractions are told; none where they are not.
    for node in ("full", "bare"):
        ok(await alice.iq("set", publish_xml(node, "i1"), to=SERVICE))
        ok(await alice.iq("set", owner_xml(f"<purge node='{node}'/>"), to=SERVICE))
    await bob.expect(event_child("full", "purge"), what="purge notification")
    # §8.4.2: deletion is told with its redirect, unless the node says not to.
    ok(await alice.iq("set", owner_xml(
        "<delete node='full'><redirect uri='xmpp:pubsub.localhost?;node=bare'/></delete>"),
        to=SERVICE))
    ev = await bob.expect(event_child("full", "delete"), what="delete notification")
    redirect = ev.find(f".//{q(PUBSUB_EVENT, 'redirect')}")
    assert redirect is not None and redirect.get("uri") == "xmpp:pubsub.localhost?;node=bare"
    ok(await alice.iq("set", owner_xml("<delete node='bare'/>"), to=SERVICE))
    await settled(alice)
    await settled(bob)
    for name in ("purge", "delete"):
        assert not [e for e in bob.received if event_child("bare", name)(e)], name
