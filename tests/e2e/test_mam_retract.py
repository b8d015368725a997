"""Message retraction (XEP-0424) in the archive: slixmpp's retraction plugin retracts a sent
message, and MAM queries show the tombstone in place of the message, in both archives, under
the same archive id; a retraction by someone else changes nothing."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, login, q, settled
from test_mam import DISCO_INFO, SID, body, mam_client, query

RETRACT = "urn:xmpp:message-retract:1"


def has_retract(e: ET.Element) -> bool:
    return e.tag == q(CLIENT_NS, "message") and e.find(q(RETRACT, "retract")) is not None


def send(client, to: str, text: str, msg_id: str) -> None:
    msg = client.make_message(mto=to, mbody=text, mtype="chat")
    msg["id"] = msg_id
    msg.send()


@async_test(timeout=120.0)
async def test_a_retracted_message_becomes_a_tombstone_in_both_archives(server):
    alice = await mam_client(server, "alice")
    alice.register_plugin("xep_0424")
    carol = await login(server, "carol")
    carol.register_plugin("xep_0424")
    bob = await mam_client(server, "bob")
    send(alice, "bob@localhost", "meet at the old mill", "wrong-1")
    send(alice, "bob@localhost", "see you there", "right-1")
    delivered = await bob.expect_message("meet at the old mill")
    archive_id = delivered.find(q(SID, "stanza-id")).get("id")
    await bob.expect_message("see you there")

    # Carol cannot retract alice's message, whatever id she names.
    carol.plugin["xep_0424"].send_retraction("bob@localhost", "wrong-1")
    await bob.expect(has_retract, what="carol's retraction")
    _, results = await query(bob, fields={"fulltext": "mill"})
    assert [i for i, _ in results] == [archive_id]

    sent = alice.plugin["xep_0424"].send_retraction("bob@localhost", "wrong-1")
    got = await bob.expect(has_retract, what="alice's retraction")
    assert got.find(q(RETRACT, "retract")).get("id") == "wrong-1", "delivered as sent"
    await settled(alice)

    for client in (bob, alice):
        _, results = await query(client)
        (first_id, tomb), (_, kept) = results[0], results[1]
        assert body(tomb) is None, ET.tostring(tomb, "unicode")
        gone = tomb.find(q(RETRACT, "retracted"))
        assert gone is not None, ET.tostring(tomb, "unicode")
        assert gone.get("id") == sent["id"] and gone.get("by") == "alice@localhost"
        assert gone.get("stamp"), "when it was retracted"
        assert tomb.get("id") == "wrong-1", "the envelope stays"
        assert body(kept) == "see you there"
        # Both retractions reached bob's archive; alice's is the last of hers.
        retractions = [m for _, m in results[2:] if m.find(q(RETRACT, "retract")) is not None]
        assert len(retractions) == (2 if client is bob else 1)
        _, found = await query(client, fields={"fulltext": "mill"})
        assert found == [], "full text no longer finds the retracted body"
    _, results = await query(bob)
    assert results[0][0] == archive_id, "the tombstone keeps the archive id"

    info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to="alice@localhost")
    features = {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}
    assert {RETRACT, RETRACT + "#tombstone"} <= features, features


@async_test(timeout=120.0)
async def test_a_message_retracted_while_its_recipient_was_offline_arrives_as_a_tombstone(server):
    alice = await login(server, "alice")
    alice.register_plugin("xep_0424")
    send(alice, "bob@localhost", "the password is hunter2", "oops-1")
    send(alice, "bob@localhost", "ignore that", "fine-1")
    sent = alice.plugin["xep_0424"].send_retraction("bob@localhost", "oops-1")
    await settled(alice)

    bob = await mam_client(server, "bob")
    tomb = await bob.expect(lambda e: e.get("id") == "oops-1", what="the retracted message")
    assert body(tomb) is None, ET.tostring(tomb, "unicode")
    gone = tomb.find(q(RETRACT, "retracted"))
    assert gone is not None, ET.tostring(tomb, "unicode")
    assert gone.get("id") == sent["id"] and gone.get("by") == "alice@localhost"
    await bob.expect_message("ignore that")
    await bob.expect(has_retract, what="the retraction")
    # What came from offline storage is what the archive holds under that id.
    _, results = await query(bob)
    archive_id, archived = results[0]
    assert tomb.find(q(SID, "stanza-id")).get("id") == archive_id
    assert archived.find(q(RETRACT, "retracted")).get("id") == sent["id"]
