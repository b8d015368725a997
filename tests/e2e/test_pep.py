"""Personal eventing (XEP-0163) with slixmpp's xep_0060, xep_0163 and xep_0115 plugins: a
publish creates the node, notifications reach the owner's and the contacts' resources that
ask for the node in their entity capabilities (verified by the server with a disco#info
query to the client), the last item reaches a contact that comes online, access models and
publish-options preconditions, retraction, deletion, and items across a restart.

That a stanza did NOT arrive is checked once the client's ping is answered: the server
queued whatever the publish caused before it answered the publisher, and handles the
client's own ping after that."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from clients import CLIENT_NS, STEP, async_test, login, q, settled
from test_roster_presence import subscribe

A, B, C = "alice@localhost", "bob@localhost", "carol@localhost"
PUBSUB = "http://jabber.org/protocol/pubsub"
PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
TUNE = "http://jabber.org/protocol/tune"
DEVICES = "urn:xmpp:omemo:2:devices"
BUNDLES = "urn:xmpp:omemo:2:bundles"


def plugins(client) -> None:
    for p in ("xep_0030", "xep_0060", "xep_0115", "xep_0163"):
        client.register_plugin(p)
    client.caps_queries = []
    client.caps_answered = asyncio.Event()

    def record(iq) -> None:
        if iq["type"] == "get" and iq["from"].bare == client.boundjid.bare:
            client.caps_queries.append(iq)

    def answered(stanza):
        # The client's answer to the server's query, as it goes out: whatever the client
        # sends after it (its ping) reaches the server after it.
        if (stanza.name == "iq" and stanza["type"] == "result"
                and stanza.xml.find(f"{{{DISCO_INFO}}}query") is not None):
            client.caps_answered.set()
        return stanza

    client.register_handler(Callback(
        "record caps query", MatchXPath(f"{{{CLIENT_NS}}}iq/{{{DISCO_INFO}}}query"), record))
    client.add_filter("out", answered)


async def pep_client(server, user: str, notify=(), extra=(), **kw):
    """A client whose capabilities ask for ``notify`` (with the slixmpp plugins ``extra``
    besides); returns once the server has verified them: it asked the client, whose answer
    went out before the ping that ``settled`` sends."""
    def setup(client) -> None:
        plugins(client)
        for name in extra:
            client.register_plugin(name)

    client = await login(server, user, presence=False, setup=setup, **kw)
    for ns in notify:
        client.plugin["xep_0030"].add_feature(f"{ns}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    if notify:
        await asyncio.wait_for(client.caps_answered.wait(), STEP)
    await settled(client)
    return client


def event_items(node: str):
    def match(e: ET.Element) -> bool:
        items = e.find(f"{q(PUBSUB_EVENT, 'event')}/{q(PUBSUB_EVENT, 'items')}")
        return e.tag == q(CLIENT_NS, "message") and items is not None and items.get("node") == node
    return match


def error_of(reply: ET.Element) -> tuple[str | None, str | None]:
    """(stanza condition, pubsub#errors condition) of an error reply."""
    assert reply.get("type") == "error", ET.tostring(reply)
    err = reply.find(q(CLIENT_NS, "error"))
    cond = app = None
    for child in err:
        ns, _, name = child.tag[1:].partition("}")
        if ns == "urn:ietf:params:xml:ns:xmpp-stanzas" and name != "text":
            cond = name
        elif ns == PUBSUB_ERRORS:
            app = name
    return cond, app


def publish_xml(node: str, payload: str, item_id: str | None = None,
                options: dict[str, str] | None = None) -> str:
    item = f"<item id='{item_id}'>{payload}</item>" if item_id else f"<item>{payload}</item>"
    opts = ""
    if options:
        fields = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in options.items())
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'>"
                "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                f"{fields}</x></publish-options>")
    return f"<pubsub xmlns='{PUBSUB}'><publish node='{node}'>{item}</publish>{opts}</pubsub>"


def tune(title: str) -> str:
    return f"<tune xmlns='{TUNE}'><title>{title}</title></tune>"


async def items_of(client, owner: str, node: str, max_items: int | None = None) -> ET.Element:
    m = f" max_items='{max_items}'" if max_items else ""
    return await client.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{node}'{m}/></pubsub>",
                           to=owner)


def item_ids(reply: ET.Element) -> list[str]:
    assert reply.get("type") == "result", ET.tostring(reply)
    return [i.get("id") for i in reply.iter(q(PUBSUB, "item"))]


async def contacts(alice, bob) -> None:
    """bob is subscribed to alice's presence (and so to her personal events)."""
    await subscribe(bob, alice, B, A)
    for c in (alice, bob):
        await settled(c)
        c.received.clear()


@async_test()
async def test_publish_creates_the_node_and_notifies_interested_contacts(server):
    alice = await pep_client(server, "alice", notify=[TUNE])
    bob = await pep_client(server, "bob", notify=[TUNE])
    carol = await pep_client(server, "carol", notify=[TUNE])
    await contacts(alice, bob)
    assert alice.caps_queries and bob.caps_queries, "the server verifies capabilities"

    payload = ET.fromstring(tune("Yesterday"))
    result = await alice.plugin["xep_0060"].publish(A, TUNE, payload=payload)
    item_id = result["pubsub"]["publish"]["item"]["id"]
    assert item_id, "an item id is generated when the publisher gives none"

    for client in (bob, alice):
        ev = await client.expect(event_items(TUNE), what="tune notification")
        assert ev.get("from") == A
        item = ev.find(f".//{q(PUBSUB_EVENT, 'item')}")
        assert item.get("id") == item_id
        assert item.find(f".//{q(TUNE, 'title')}").text == "Yesterday"
    # carol has no subscription to alice's presence.
    await settled(carol)
    assert not [e for e in carol.received if event_items(TUNE)(e)]


@async_test()
async def test_a_contact_without_notify_gets_nothing_and_the_last_item_on_login(server):
    alice = await pep_client(server, "alice", notify=[TUNE])
    bob = await pep_client(server, "bob", notify=[])
    await contacts(alice, bob)
    reply = await alice.iq("set", publish_xml(TUNE, tune("Help!"), "current"))
    assert reply.get("type") == "result", ET.tostring(reply)
    await settled(bob)
    assert not [e for e in bob.received if event_items(TUNE)(e)], "bob did not ask for tunes"
    await bob.close()

    # A contact coming online with +notify gets the last item (XEP-0163 §4.3.4).
    bob2 = await pep_client(server, "bob", notify=[TUNE], resource="second")
    ev = await bob2.expect(event_items(TUNE), what="last tune")
    assert ev.find(f".//{q(TUNE, 'title')}").text == "Help!"


@async_test()
async def test_omemo_shaped_nodes_with_open_access_are_read_by_anyone(server):
    """A device list and a bundle published with access open (as OMEMO does) are read by
    a user without any subscription; a node with the default (presence) access is not."""
    alice = await pep_client(server, "alice")
    carol = await pep_client(server, "carol")
    open_ = {"pubsub#access_model": "open", "pubsub#max_items": "max"}
    devices = f"<devices xmlns='urn:xmpp:omemo:2'><device id='31415'/></devices>"
    bundle = ("<bundle xmlns='urn:xmpp:omemo:2'><spk id='1'>AAAA</spk><spks>BBBB</spks>"
              "<ik>CCCC</ik><prekeys><pk id='1'>DDDD</pk></prekeys></bundle>")
    for node, payload, item in ((DEVICES, devices, "current"), (BUNDLES, bundle, "31415")):
        reply = await alice.iq("set", publish_xml(node, payload, item, open_))
        assert reply.get("type") == "result", ET.tostring(reply)
    assert item_ids(await items_of(carol, A, DEVICES)) == ["current"]
    reply = await carol.iq(
        "get", f"<pubsub xmlns='{PUBSUB}'><items node='{BUNDLES}'><item id='31415'/></items>"
               "</pubsub>", to=A)
    assert item_ids(reply) == ["31415"]
    assert reply.find(f".//{{urn:xmpp:omemo:2}}ik").text == "CCCC"

    reply = await alice.iq("set", publish_xml(TUNE, tune("private"), "current"))
    assert reply.get("type") == "result"
    assert error_of(await items_of(carol, A, TUNE)) == (
        "not-authorized", "presence-subscription-required")
    whitelist = {"pubsub#access_model": "whitelist"}
    reply = await alice.iq("set", publish_xml("urn:test:secret", tune("x"), "1", whitelist))
    assert reply.get("type") == "result"
    assert error_of(await items_of(carol, A, "urn:test:secret")) == ("not-allowed", "closed-node")
    assert item_ids(await items_of(alice, A, "urn:test:secret")) == ["1"]


@async_test()
async def test_publish_options_are_preconditions_of_an_existing_node(server):
    alice = await pep_client(server, "alice")
    bob = await pep_client(server, "bob")
    opts = {"pubsub#access_model": "open", "pubsub#max_items": "max",
            "pubsub#persist_items": "true", "pubsub#send_last_published_item": "on_sub_and_presence"}
    reply = await alice.iq("set", publish_xml(DEVICES, "<devices xmlns='urn:xmpp:omemo:2'/>",
                                              "current", opts))
    assert reply.get("type") == "result", ET.tostring(reply)
    # Same options again: met.
    reply = await alice.iq("set", publish_xml(DEVICES, "<devices xmlns='urn:xmpp:omemo:2'/>",
                                              "current", opts))
    assert reply.get("type") == "result", ET.tostring(reply)
    for wrong in ({"pubsub#access_model": "presence"}, {"pubsub#max_items": "1"},
                  {"pubsub#no_such_option": "1"}):
        reply = await alice.iq("set", publish_xml(DEVICES, "<devices xmlns='urn:xmpp:omemo:2'/>",
                                                  "current", wrong))
        assert error_of(reply) == ("conflict", "precondition-not-met"), wrong
    # Someone else's node: forbidden.
    reply = await bob.iq("set", publish_xml(DEVICES, "<devices xmlns='urn:xmpp:omemo:2'/>"),
                         to=A)
    assert error_of(reply)[0] == "forbidden"


@async_test()
async def test_items_max_retract_delete_and_purge(server):
    alice = await pep_client(server, "alice", notify=["urn:test:list"])
    bob = await pep_client(server, "bob", notify=["urn:test:list"])
    await contacts(alice, bob)
    node = "urn:test:list"
    opts = {"pubsub#max_items": "3"}
    for i in range(1, 5):
        reply = await alice.iq("set", publish_xml(node, f"<n xmlns='urn:test'>{i}</n>", str(i),
                                                  opts))
        assert reply.get("type") == "result", ET.tostring(reply)
    assert item_ids(await items_of(bob, A, node)) == ["2", "3", "4"]
    assert item_ids(await items_of(bob, A, node, max_items=1)) == ["4"]
    bob.received.clear()

    retract = f"<pubsub xmlns='{PUBSUB}'><retract node='{node}' notify='true'><item id='3'/></retract></pubsub>"
    assert (await alice.iq("set", retract)).get("type") == "result"
    ev = await bob.expect(event_items(node), what="retraction")
    assert [r.get("id") for r in ev.iter(q(PUBSUB_EVENT, "retract"))] == ["3"]
    assert item_ids(await items_of(bob, A, node)) == ["2", "4"]
    assert error_of(await alice.iq("set", retract))[0] == "item-not-found"
    assert error_of(await bob.iq("set", retract, to=A))[0] == "forbidden"

    purge = f"<pubsub xmlns='{PUBSUB_OWNER}'><purge node='{node}'/></pubsub>"
    assert (await alice.iq("set", purge)).get("type") == "result"
    await bob.expect(lambda e: e.find(f".//{q(PUBSUB_EVENT, 'purge')}") is not None,
                     what="purge notification")
    assert item_ids(await items_of(bob, A, node)) == []

    delete = f"<pubsub xmlns='{PUBSUB_OWNER}'><delete node='{node}'/></pubsub>"
    assert error_of(await bob.iq("set", delete, to=A))[0] == "forbidden"
    assert (await alice.iq("set", delete)).get("type") == "result"
    await bob.expect(lambda e: e.find(f".//{q(PUBSUB_EVENT, 'delete')}") is not None,
                     what="delete notification")
    assert error_of(await items_of(bob, A, node))[0] == "item-not-found"


@async_test()
async def test_the_account_shows_the_pep_identity_and_features(server):
    alice = await pep_client(server, "alice")
    bob = await pep_client(server, "bob")
    # Asked by the account itself and by anyone else (XEP-0163 §1, XEP-0060 §9).
    for asking in (alice, bob):
        info = await asking.plugin["xep_0030"].get_info(jid=A)
        assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
        features = info["disco_info"]["features"]
        for f in ("publish", "publish-options", "auto-create", "access-open", "last-published",
                  "pubsub-on-a-jid", "modify-affiliations", "manage-subscriptions"):
            assert f"{PUBSUB}#{f}" in features, f
        assert PUBSUB in features


@async_test()
async def test_items_survive_a_restart(server):
    alice = await pep_client(server, "alice")
    reply = await alice.iq("set", publish_xml(TUNE, tune("Let it be"), "current"))
    assert reply.get("type") == "result"
    await alice.close()
    server.restart()
    alice = await pep_client(server, "alice")
    reply = await items_of(alice, A, TUNE)
    assert item_ids(reply) == ["current"]
    assert reply.find(f".//{q(TUNE, 'title')}").text == "Let it be"


@async_test()
async def test_payload_and_node_limits(make_server):
    server = make_server(pubsub={"max_payload_bytes": 1024, "max_nodes": 2})
    alice = await pep_client(server, "alice")
    big = f"<blob xmlns='urn:test'>{'x' * 2000}</blob>"
    assert error_of(await alice.iq("set", publish_xml("urn:test:big", big))) == (
        "not-acceptable", "payload-too-big")
    for node in ("urn:test:1", "urn:test:2"):
        reply = await alice.iq("set", publish_xml(node, tune("n")))
        assert reply.get("type") == "result", ET.tostring(reply)
    assert error_of(await alice.iq("set", publish_xml("urn:test:3", tune("n")))) == (
        "not-allowed", "max-nodes-exceeded")
    # Nothing was lost: the first nodes still have their items.
    assert len(item_ids(await items_of(alice, A, "urn:test:1"))) == 1


@async_test()
async def test_roster_access_reads_the_owners_roster_groups(server):
    alice = await pep_client(server, "alice")
    bob = await pep_client(server, "bob")
    carol = await pep_client(server, "carol")
    for contact, group in ((B, "friends"), (C, "colleagues")):
        reply = await alice.iq("set", "<query xmlns='jabber:iq:roster'>"
                                      f"<item jid='{contact}'><group>{group}</group></item></query>")
        assert reply.get("type") == "result", ET.tostring(reply)
    opts = {"pubsub#access_model": "roster", "pubsub#roster_groups_allowed": "friends"}
    reply = await alice.iq("set", publish_xml("urn:test:family", tune("home"), "1", opts))
    assert reply.get("type") == "result", ET.tostring(reply)
    assert item_ids(await items_of(bob, A, "urn:test:family")) == ["1"]
    assert error_of(await items_of(carol, A, "urn:test:family")) == (
        "not-authorized", "not-in-roster-group")
    # Moved to another group, bob is refused too.
    reply = await alice.iq("set", "<query xmlns='jabber:iq:roster'>"
                                  f"<item jid='{B}'><group>colleagues</group></item></query>")
    assert reply.get("type") == "result"
    assert error_of(await items_of(bob, A, "urn:test:family"))[0] == "not-authorized"


@async_test()
async def test_a_newly_approved_contact_gets_the_last_item(server):
    alice = await pep_client(server, "alice")
    bob = await pep_client(server, "bob", notify=[TUNE])
    reply = await alice.iq("set", publish_xml(TUNE, tune("Something"), "current"))
    assert reply.get("type") == "result"
    await settled(bob)
    assert not [e for e in bob.received if event_items(TUNE)(e)], "not a contact yet"
    await subscribe(bob, alice, B, A)
    ev = await bob.expect(event_items(TUNE), what="last tune once approved")
    assert ev.find(f".//{q(TUNE, 'title')}").text == "Something"


@async_test(timeout=120)
async def test_an_account_removed_with_the_server_stopped_takes_its_nodes(server):
    alice = await pep_client(server, "alice")
    reply = await alice.iq("set", publish_xml(TUNE, tune("Yesterday"), "current"))
    assert reply.get("type") == "result", ET.tostring(reply)
    await alice.close()
    server.stop()
    server.recreate_account("alice")
    server.start()
    alice = await pep_client(server, "alice")
    assert error_of(await items_of(alice, A, TUNE))[0] == "item-not-found"


@async_test()
async def test_affiliations_on_an_account_outcast_and_whitelist_member(server):
    open_node, club = "urn:test:open", "urn:test:club"
    alice = await pep_client(server, "alice")
    bob = await pep_client(server, "bob", notify=[open_node, club])
    carol = await pep_client(server, "carol", notify=[open_node, club])
    await contacts(alice, bob)
    await subscribe(carol, alice, C, A)
    for node, access in ((open_node, "presence"), (club, "whitelist")):
        reply = await alice.iq("set", publish_xml(node, tune("first"), "1",
                                                  {"pubsub#access_model": access}))
        assert reply.get("type") == "result", ET.tostring(reply)
    change = (f"<pubsub xmlns='{PUBSUB_OWNER}'><affiliations node='{{node}}'>"
              "<affiliation jid='{jid}' affiliation='{aff}'/></affiliations></pubsub>")
    for node, jid, aff in ((open_node, C, "outcast"), (club, B, "member")):
        reply = await alice.iq("set", change.format(node=node, jid=jid, aff=aff))
        assert reply.get("type") == "result", ET.tostring(reply)
    # An account's nodes have one owner.
    reply = await alice.iq("set", change.format(node=club, jid=B, aff="owner"))
    assert error_of(reply)[0] == "not-acceptable"
    for client in (bob, carol):
        await settled(client)
        client.received.clear()

    for node in (open_node, club):
        reply = await alice.iq("set", publish_xml(node, tune("second"), "2"))
        assert reply.get("type") == "result", ET.tostring(reply)
    # bob: a contact on the presence node, a member of the whitelist one.
    for node in (open_node, club):
        await bob.expect(event_items(node), what=f"{node} notification")
    assert item_ids(await items_of(bob, A, club)) == ["2"]
    # carol, a contact too, is an outcast of the one and a stranger to the other.
    await settled(carol)
    assert not [e for e in carol.received if event_items(open_node)(e) or event_items(club)(e)]
    assert error_of(await items_of(carol, A, open_node))[0] == "forbidden"
    assert error_of(await items_of(carol, A, club)) == ("not-allowed", "closed-node")
