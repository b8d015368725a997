"""A room that routes a stanza back to itself keeps serving (XEP-0045 through slixmpp).

A room computes its outcome, then routes it; what comes back to the room (a decline or an
invitation addressed to the room itself, an error bouncing off an occupant) waits in the
room's inbox instead of re-entering it. Each case below once hung the room, every client
talking to it, and the service's room list.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, q
from test_muc import MUC, NS_DISCO_ITEMS, NS_MUC_USER, ROOM, create_configured, muc_login


async def room_still_serves(owner, outsider, body: str) -> None:
    """The room relays a message, lists in disco#items, and lets a newcomer join."""
    owner.send_message(mto=ROOM, mbody=body, mtype="groupchat")
    await owner.expect_message(body)
    items = await outsider.iq("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=MUC)
    assert items.get("type") == "result", ET.tostring(items)
    listed = [i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))]
    assert ROOM in listed, listed
    await outsider.plugin["xep_0045"].join_muc_wait(ROOM, "outsider", maxstanzas=0, timeout=10)


@async_test(timeout=60)
async def test_decline_addressed_to_the_room_itself(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_publicroom": True})
    # bob is no occupant: a decline "to" the room is relayed by the room to the room.
    decline = ET.fromstring(
        f"<message xmlns='{CLIENT_NS}' to='{ROOM}'><x xmlns='{NS_MUC_USER}'>"
        f"<decline to='{ROOM}'><reason>no</reason></decline></x></message>")
    bob.send_raw(ET.tostring(decline, encoding="unicode"))
    await room_still_serves(alice, bob, "after the decline")


@async_test(timeout=60)
async def test_invitation_addressed_to_the_room_itself(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_publicroom": True})
    invite = ET.fromstring(
        f"<message xmlns='{CLIENT_NS}' to='{ROOM}'><x xmlns='{NS_MUC_USER}'>"
        f"<invite to='{ROOM}'/></x></message>")
    alice.send_raw(ET.tostring(invite, encoding="unicode"))
    await room_still_serves(alice, bob, "after the invitation")


@async_test(timeout=60)
async def test_a_senders_room_messages_arrive_in_order(make_server):
    server = make_server(muc={"messages_per_second": 0})
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    bodies = [f"n{i}" for i in range(40)]
    for body in bodies:
        alice.send_message(mto=ROOM, mbody=body, mtype="groupchat")
    await bob.expect_message(bodies[-1])  # taken out of bob.received
    got = [m.findtext(q(CLIENT_NS, "body")) for m in bob.received
           if m.tag == q(CLIENT_NS, "message") and m.get("type") == "groupchat"]
    assert [b for b in got if b in bodies] == bodies[:-1]
