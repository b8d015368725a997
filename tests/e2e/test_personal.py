"""Personal data of accounts through two client libraries, slixmpp and aioxmpp: private XML
storage (XEP-0049) and its errors, bookmarks converted between XEP-0402 and the legacy
XEP-0048 forms (private storage and the ``storage:bookmarks`` node), vCards (XEP-0054) with
their size limit, the avatar converted between the vCard photo and the XEP-0084 nodes
(XEP-0398) and its hash in presence (XEP-0153), vCard4 over personal eventing (XEP-0292),
all of it across a restart and gone with the account."""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET

import aioxmpp
import aioxmpp.avatar
import aioxmpp.bookmarks
import aioxmpp.private_xml
import aioxmpp.vcard
import aioxmpp.vcard.xso

from clients import CLIENT_NS, async_test, login, q, settled, stanza_error
from test_mam_aioxmpp import aioxmpp_client
from test_pep import A, B, C, PUBSUB, items_of
from test_roster_presence import mutual

PRIVATE = "jabber:iq:private"
BOOKMARKS2 = "urn:xmpp:bookmarks:1"
LEGACY = "storage:bookmarks"
VCARD = "vcard-temp"
VCARD_UPDATE = "vcard-temp:x:update"
AVATAR_DATA = "urn:xmpp:avatar:data"
AVATAR_METADATA = "urn:xmpp:avatar:metadata"
VCARD4 = "urn:ietf:params:xml:ns:vcard-4.0"
IMAGE = bytes(range(256)) * 4  # not a real PNG: the server never looks inside
IMAGE_HASH = hashlib.sha1(IMAGE).hexdigest()

# XEP-0402 §3: the node's publish options, which xep_0223 adds to its own.
BOOKMARKS2_PROFILE = {"pubsub#max_items": "max", "pubsub#send_last_published_item": "never"}


def private_xml(inner: str) -> str:
    return f"<query xmlns='{PRIVATE}'>{inner}</query>"


def error_text(reply: ET.Element) -> str:
    return reply.findtext(f"{q(CLIENT_NS, 'error')}/"
                          "{urn:ietf:params:xml:ns:xmpp-stanzas}text") or ""


def plugins(*names):
    def setup(client) -> None:
        for name in names:
            client.register_plugin(name)
    return setup


def items(reply: ET.Element) -> dict[str, ET.Element]:
    """Item id → payload of an items answer."""
    assert reply.get("type") == "result", ET.tostring(reply)
    return {i.get("id"): next(iter(i), None) for i in reply.iter(q(PUBSUB, "item"))}


# --- private XML storage --------------------------------------------------------------------


@async_test()
async def test_private_storage_keeps_one_element_per_namespace_with_the_xeps_errors(
        make_server):
    server = make_server(private={"max_bytes": 1024})
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    prefs = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"
    assert (await alice.iq("set", private_xml(prefs))).get("type") == "result"
    reply = await alice.iq("get", private_xml("<exodus xmlns='exodus:prefs'/>"))
    assert reply.findtext(f".//{q('exodus:prefs', 'defaultnick')}") == "Hamlet"
    # Nothing stored: the empty element asked for.
    reply = await alice.iq("get", private_xml("<other xmlns='urn:test:none'/>"))
    got = reply.find(f"{q(PRIVATE, 'query')}/{q('urn:test:none', 'other')}")
    assert got is not None and len(got) == 0, ET.tostring(reply)

    for bad in ("<query xmlns='jabber:iq:roster'/>",
                prefs + "<x xmlns='urn:test:two'/>",
                ""):
        reply = await alice.iq("set", private_xml(bad))
        assert stanza_error(reply) == "not-acceptable", ET.tostring(reply)
    reply = await alice.iq("get", private_xml("<query xmlns='jabber:iq:auth'/>"))
    assert stanza_error(reply) == "not-acceptable", ET.tostring(reply)
    # Another account's storage, to read or to write.
    for kind in ("get", "set"):
        reply = await bob.iq(kind, private_xml(prefs), to=A)
        assert stanza_error(reply) == "forbidden", ET.tostring(reply)
    big = f"<big xmlns='urn:test:big'>{'x' * 2000}</big>"
    reply = await alice.iq("set", private_xml(big))
    assert stanza_error(reply) == "not-acceptable", ET.tostring(reply)
    assert "1024 bytes" in error_text(reply), ET.tostring(reply)
    # The refused writes lost nothing.
    reply = await alice.iq("get", private_xml("<exodus xmlns='exodus:prefs'/>"))
    assert reply.findtext(f".//{q('exodus:prefs', 'defaultnick')}") == "Hamlet"

    # The second library reads what the first stored.
    async with aioxmpp_client(server, "alice") as client:
        private = client.summon(aioxmpp.private_xml.PrivateXMLService)
        storage = await private.get_private_xml(aioxmpp.bookmarks.Storage())
        assert list(storage.registered_payload.bookmarks) == []


# --- bookmarks ------------------------------------------------------------------------------


@async_test(timeout=120)
async def test_bookmarks_convert_between_legacy_private_storage_and_xep_0402(server):
    room1, room2 = "den@conference.localhost", "hall@conference.localhost"
    alice = await login(server, "alice", setup=plugins("xep_0030", "xep_0060", "xep_0163",
                                                       "xep_0223", "xep_0402"))
    info = await alice.plugin["xep_0030"].get_info(jid=A)
    features = info["disco_info"]["features"]
    for f in (f"{BOOKMARKS2}#compat", f"{BOOKMARKS2}#compat-pep", PRIVATE):
        assert f in features, f

    async with aioxmpp_client(server, "alice") as client:
        legacy = client.summon(aioxmpp.bookmarks.BookmarkClient)
        await legacy.add_bookmark(aioxmpp.bookmarks.Conference(
            "The Den", aioxmpp.JID.fromstr(room1), autojoin=True, nick="al"))

        # Written in legacy private storage, read as XEP-0402 by the other library.
        got = items(await items_of(alice, A, BOOKMARKS2))
        assert list(got) == [room1], got
        conf = got[room1]
        assert conf.get("name") == "The Den" and conf.get("autojoin") in ("true", "1")
        assert conf.findtext(q(BOOKMARKS2, "nick")) == "al"

        # Written as XEP-0402, read from legacy private storage.
        alice.plugin["xep_0223"].node_profiles[BOOKMARKS2] = BOOKMARKS2_PROFILE
        item = alice.plugin["xep_0402"].stanza.Conference()
        item["name"] = "The Hall"
        item["nick"] = "alice"
        await alice.plugin["xep_0223"].store(item, node=BOOKMARKS2, id=room2)
        marks = await legacy.get_bookmarks()
        assert {(str(m.jid), m.name) for m in marks} == {
            (room1, "The Den"), (room2, "The Hall")}
        hall = next(m for m in marks if str(m.jid) == room2)
        assert hall.nick == "alice" and not hall.autojoin

        # A XEP-0402 retraction removes it from the legacy storage.
        reply = await alice.iq("set", f"<pubsub xmlns='{PUBSUB}'><retract node='{BOOKMARKS2}' "
                                      f"notify='true'><item id='{room2}'/></retract></pubsub>")
        assert reply.get("type") == "result", ET.tostring(reply)
        marks = await legacy.get_bookmarks()
        assert [str(m.jid) for m in marks] == [room1]

        # A legacy removal retracts the item.
        await legacy.discard_bookmark(marks[0])
        assert items(await items_of(alice, A, BOOKMARKS2)) == {}

    # XEP-0223: the node is private, whatever wrote it.
    reply = await alice.iq("get", f"<pubsub xmlns='{PUBSUB}#owner'><configure "
                                  f"node='{BOOKMARKS2}'/></pubsub>")
    fields = {f.get("var"): f.findtext("{jabber:x:data}value")
              for f in reply.iter("{jabber:x:data}field")}
    assert fields["pubsub#access_model"] == "whitelist", fields
    assert fields["pubsub#persist_items"] in ("1", "true"), fields
    bob = await login(server, "bob")
    reply = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{BOOKMARKS2}'/></pubsub>",
                         to=A)
    assert reply.get("type") == "error", ET.tostring(reply)


@async_test(timeout=120)
async def test_bookmarks_of_the_legacy_node_reach_private_storage_and_xep_0402(server):
    room = "den@conference.localhost"
    alice = await login(server, "alice", setup=plugins(
        "xep_0004", "xep_0030", "xep_0045", "xep_0049", "xep_0060", "xep_0163", "xep_0223",
        "xep_0048"))
    bookmarks = alice.plugin["xep_0048"].stanza.Bookmarks()
    bookmarks.add_conference(room, "al", name="The Den", autojoin=True)
    # XEP-0048 1.1 §3.2: an old client's own node, stored by XEP-0223 with its preconditions.
    await alice.plugin["xep_0048"].set_bookmarks(bookmarks, method="xep_0223")
    got = items(await items_of(alice, A, BOOKMARKS2))
    assert list(got) == [room] and got[room].get("name") == "The Den", got
    reply = await alice.plugin["xep_0048"].get_bookmarks(method="xep_0049")
    confs = reply["private"]["bookmarks"]["conferences"]
    assert [str(c["jid"]) for c in confs] == [room]

    # Private storage written: the legacy node follows, since an old client made it.
    empty = f"<storage xmlns='{LEGACY}'/>"
    assert (await alice.iq("set", private_xml(empty))).get("type") == "result"
    legacy_items = items(await items_of(alice, A, LEGACY))
    assert len(legacy_items["current"]) == 0, legacy_items
    assert items(await items_of(alice, A, BOOKMARKS2)) == {}


# --- vCards ---------------------------------------------------------------------------------


def slix_vcard(client, fn: str, photo: bytes | None = None):
    vcard = client.plugin["xep_0054"].make_vcard()
    vcard["FN"] = fn
    if photo is not None:
        vcard["PHOTO"]["TYPE"] = "image/png"
        vcard["PHOTO"]["BINVAL"] = photo
    return vcard


@async_test(timeout=120)
async def test_vcards_set_and_get_with_both_libraries(make_server):
    server = make_server(vcard={"max_bytes": 4096})
    alice = await login(server, "alice", setup=plugins("xep_0054"))
    await alice.plugin["xep_0054"].publish_vcard(slix_vcard(alice, "Alice Liddell"), jid=A)

    async with aioxmpp_client(server, "bob") as client:
        vcards = client.summon(aioxmpp.vcard.VCardService)
        got = await vcards.get_vcard(aioxmpp.JID.fromstr(A))
        assert got.elements.findtext(f"{{{VCARD}}}FN") == "Alice Liddell"
        # bob sets his own with the second library; the first reads it.
        mine = aioxmpp.vcard.xso.VCard()
        mine.set_photo_data("image/png", b"bob's face")
        await vcards.set_vcard(mine)
        # Nobody set carol's: an empty one.
        got = await vcards.get_vcard(aioxmpp.JID.fromstr(C))
        assert len(got.elements) == 0 and got.get_photo_data() is None

    reply = await alice.plugin["xep_0054"].get_vcard(B)
    assert reply["vcard_temp"]["PHOTO"]["BINVAL"] == b"bob's face"
    reply = await alice.iq("get", f"<vCard xmlns='{VCARD}'/>", to="nobody@localhost")
    assert stanza_error(reply) == "service-unavailable", ET.tostring(reply)
    # Only one's own.
    reply = await alice.iq("set", f"<vCard xmlns='{VCARD}'><FN>Not Bob</FN></vCard>", to=B)
    assert stanza_error(reply) == "forbidden", ET.tostring(reply)
    # Beyond vcard.max_bytes: refused with a reason, the stored one unchanged.
    reply = await alice.iq("set", f"<vCard xmlns='{VCARD}'><DESC>{'x' * 5000}</DESC></vCard>")
    assert stanza_error(reply) == "not-acceptable", ET.tostring(reply)
    assert "4096 bytes" in error_text(reply), ET.tostring(reply)
    reply = await alice.plugin["xep_0054"].get_vcard(A)
    assert reply["vcard_temp"]["FN"] == "Alice Liddell"


@async_test(timeout=120)
async def test_a_vcard_photo_becomes_the_pep_avatar_and_its_hash_is_in_presence(server):
    alice = await login(server, "alice", setup=plugins("xep_0030", "xep_0054", "xep_0153"))
    bob = await login(server, "bob")
    await mutual(alice, bob)
    info = await alice.plugin["xep_0030"].get_info(jid=A)
    assert "urn:xmpp:pep-vcard-conversion:0" in info["disco_info"]["features"]

    # xep_0153 fetches the vCard, sets its photo, stores it and sends presence.
    await alice.plugin["xep_0153"].set_avatar(avatar=IMAGE, mtype="image/png")
    pres = await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("type") is None
        and e.findtext(f"{q(VCARD_UPDATE, 'x')}/{q(VCARD_UPDATE, 'photo')}") == IMAGE_HASH,
        what="presence with the photo's hash")
    assert len(pres.findall(q(VCARD_UPDATE, "x"))) == 1, ET.tostring(pres)

    async with aioxmpp_client(server, "bob") as client:
        avatars = client.summon(aioxmpp.avatar.AvatarService)
        found = await avatars.get_avatar_metadata(aioxmpp.JID.fromstr(A), require_fresh=True)
        pep = [d for d in found if isinstance(d, aioxmpp.avatar.service.PubsubAvatarDescriptor)]
        assert pep, found
        assert pep[0].normalized_id == IMAGE_HASH and pep[0].mime_type == "image/png"
        assert await pep[0].get_image_bytes() == IMAGE

    # The photo removed: the avatar is disabled (an empty metadata), presence says none.
    await alice.plugin["xep_0054"].publish_vcard(slix_vcard(alice, "Alice"), jid=A)
    metadata = items(await items_of(bob, A, AVATAR_METADATA))
    assert [len(m) for m in metadata.values()] == [0], metadata
    alice.send_presence()
    pres = await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("type") is None
        and e.find(f"{q(VCARD_UPDATE, 'x')}/{q(VCARD_UPDATE, 'photo')}") is not None
        and not e.findtext(f"{q(VCARD_UPDATE, 'x')}/{q(VCARD_UPDATE, 'photo')}"),
        what="presence with an empty photo")
    assert pres is not None


@async_test(timeout=120)
async def test_a_pep_avatar_becomes_the_vcard_photo_and_a_contact_fetches_it(server):
    alice = await login(server, "alice", setup=plugins("xep_0060", "xep_0163", "xep_0084"))
    bob = await login(server, "bob")
    await mutual(alice, bob)
    avatar = alice.plugin["xep_0084"]
    await avatar.publish_avatar(IMAGE)
    await avatar.publish_avatar_metadata(
        [{"id": IMAGE_HASH, "type": "image/png", "bytes": len(IMAGE)}])

    async with aioxmpp_client(server, "bob") as client:
        # XEP-0084: the contact fetches the avatar alice published.
        avatars = client.summon(aioxmpp.avatar.AvatarService)
        found = await avatars.get_avatar_metadata(aioxmpp.JID.fromstr(A), require_fresh=True)
        pep = [d for d in found if isinstance(d, aioxmpp.avatar.service.PubsubAvatarDescriptor)]
        assert pep and await pep[0].get_image_bytes() == IMAGE, found
        # XEP-0398: and finds it as her vCard photo.
        vcards = client.summon(aioxmpp.vcard.VCardService)
        got = await vcards.get_vcard(aioxmpp.JID.fromstr(A))
        assert got.get_photo_data() == IMAGE
        assert got.get_photo_mime_type() == "image/png"

    alice.send_presence()
    await bob.expect(
        lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("type") is None
        and e.findtext(f"{q(VCARD_UPDATE, 'x')}/{q(VCARD_UPDATE, 'photo')}") == IMAGE_HASH,
        what="presence with the avatar's hash")

    # Disabled (XEP-0084 §4.5): the vCard loses its photo.
    await avatar.stop()
    await settled(alice)
    reply = await bob.iq("get", f"<vCard xmlns='{VCARD}'/>", to=A)
    assert reply.find(f"{q(VCARD, 'vCard')}/{q(VCARD, 'PHOTO')}") is None, ET.tostring(reply)


@async_test()
async def test_vcard4_is_a_plain_pep_node(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    await mutual(alice, bob)
    card = (f"<vcard xmlns='{VCARD4}'><fn><text>Alice</text></fn>"
            f"<nickname><text>al</text></nickname></vcard>")
    reply = await alice.iq("set", f"<pubsub xmlns='{PUBSUB}'><publish node='urn:xmpp:vcard4'>"
                                  f"<item id='current'>{card}</item></publish></pubsub>")
    assert reply.get("type") == "result", ET.tostring(reply)
    got = items(await items_of(bob, A, "urn:xmpp:vcard4"))
    assert got["current"].findtext(f"{q(VCARD4, 'fn')}/{q(VCARD4, 'text')}") == "Alice"
    carol = await login(server, "carol")
    reply = await carol.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='urn:xmpp:vcard4'/>"
                                  "</pubsub>", to=A)
    assert stanza_error(reply) == "not-authorized", ET.tostring(reply)


# --- lifetime -------------------------------------------------------------------------------


@async_test(timeout=120)
async def test_personal_data_survives_a_restart_and_goes_with_the_account(make_server):
    server = make_server()
    alice = await login(server, "alice", setup=plugins("xep_0054"))
    await alice.plugin["xep_0054"].publish_vcard(slix_vcard(alice, "Alice", IMAGE), jid=A)
    prefs = "<exodus xmlns='exodus:prefs'><defaultnick>Hamlet</defaultnick></exodus>"
    assert (await alice.iq("set", private_xml(prefs))).get("type") == "result"
    await alice.close()
    server.restart()

    bob = await login(server, "bob", setup=plugins("xep_0054"))
    reply = await bob.plugin["xep_0054"].get_vcard(A)
    assert reply["vcard_temp"]["FN"] == "Alice"
    assert reply["vcard_temp"]["PHOTO"]["BINVAL"] == IMAGE
    alice = await login(server, "alice")
    reply = await alice.iq("get", private_xml("<exodus xmlns='exodus:prefs'/>"))
    assert reply.findtext(f".//{q('exodus:prefs', 'defaultnick')}") == "Hamlet"
    await alice.close()

    server.recreate_account("alice")
    reply = await bob.iq("get", f"<vCard xmlns='{VCARD}'/>", to=A)
    card = reply.find(q(VCARD, "vCard"))
    assert card is not None and len(card) == 0, ET.tostring(reply)
    alice = await login(server, "alice")
    reply = await alice.iq("get", private_xml("<exodus xmlns='exodus:prefs'/>"))
    assert reply.find(f".//{q('exodus:prefs', 'defaultnick')}") is None, ET.tostring(reply)
    # With the server stopped too (the command line alone removes the account).
    assert (await alice.iq("set", private_xml(prefs))).get("type") == "result"
    await alice.close()
    await bob.close()
    server.stop()
    server.recreate_account("alice")
    server.start()
    alice = await login(server, "alice")
    reply = await alice.iq("get", private_xml("<exodus xmlns='exodus:prefs'/>"))
    assert reply.find(f".//{q('exodus:prefs', 'defaultnick')}") is None, ET.tostring(reply)
