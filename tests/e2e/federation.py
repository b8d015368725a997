"""What users of two federated servers do together, as scenarios any pair of servers can run:
chat messages both ways, a mutual presence subscription, and a chat room on one server with
an occupant from the other. The federation tests run them between xmppd and real peers, and
between the peers themselves to check the harness.

``server`` arguments are anything ``clients.login`` accepts: ``conftest.Server`` or a peer of
``s2s_fixture``. Each step awaits the stanza that proves it; ``FIRST`` bounds a step that
may have to open server-to-server streams first (DNS, TCP, TLS, authentication, possibly a
dialback round trip both ways), ``clients.STEP`` the others.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from clients import CLIENT_NS, Client, login, q

FIRST = 60.0
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = f"{NS_MUC}#user"
NS_MUC_OWNER = f"{NS_MUC}#owner"


async def exchange_messages(a: Client, b: Client, tag: str = "") -> None:
    """``a`` and ``b`` (on different servers) each send the other a chat message."""
    a.chat(str(b.boundjid.bare), f"hello from {a.boundjid.bare}{tag}")
    await b.expect_message(f"hello from {a.boundjid.bare}{tag}", str(a.boundjid.bare),
                           timeout=FIRST)
    b.chat(str(a.boundjid.bare), f"hello from {b.boundjid.bare}{tag}")
    await a.expect_message(f"hello from {b.boundjid.bare}{tag}", str(b.boundjid.bare),
                           timeout=FIRST)


async def subscribe(a: Client, b: Client) -> None:
    """``a`` subscribes to ``b``'s presence and ``b`` approves (RFC 6121 §3.1): ``a`` then
    receives ``b``'s available presence from ``b``'s server."""
    a_jid, b_jid = str(a.boundjid.bare), str(b.boundjid.bare)
    a.send_presence(pto=b_jid, ptype="subscribe")
    await b.expect_presence(a_jid, "subscribe", timeout=FIRST)
    b.send_presence(pto=a_jid, ptype="subscribed")
    await a.expect_presence(b_jid, "subscribed", timeout=FIRST)
    await a.expect_presence(str(b.boundjid), full=True, timeout=FIRST)


async def mutual_subscription(a: Client, b: Client) -> None:
    """Each subscribes to the other; both see the other online."""
    await subscribe(a, b)
    await subscribe(b, a)


def _codes(e: ET.Element) -> set[str]:
    return {s.get("code") for s in e.iter(q(NS_MUC_USER, "status"))}


def _self_presence(room: str, nick: str):
    def match(e: ET.Element) -> bool:
        return (e.tag == q(CLIENT_NS, "presence") and e.get("from") == f"{room}/{nick}"
                and e.get("type") is None and "110" in _codes(e))
    return match


def _occupant(room: str, nick: str):
    def match(e: ET.Element) -> bool:
        return (e.tag == q(CLIENT_NS, "presence") and e.get("from") == f"{room}/{nick}"
                and e.get("type") is None)
    return match


def _groupchat(room: str, nick: str, body: str):
    def match(e: ET.Element) -> bool:
        return (e.tag == q(CLIENT_NS, "message") and e.get("type") == "groupchat"
                and e.get("from") == f"{room}/{nick}"
                and e.findtext(q(CLIENT_NS, "body")) == body)
    return match


async def enter(client: Client, room: str, nick: str, timeout: float = FIRST) -> ET.Element:
    """Joins ``room`` as ``nick`` (XEP-0045 §7.2) with no history and returns the occupant's
    own presence (status 110)."""
    presence = client.make_presence(pto=f"{room}/{nick}")
    x = ET.SubElement(presence.xml, q(NS_MUC, "x"))
    ET.SubElement(x, q(NS_MUC, "history"), {"maxstanzas": "0"})
    presence.send()
    return await client.expect(_self_presence(room, nick), timeout=timeout,
                               what=f"own presence in {room}")


async def create_room(owner: Client, room: str, nick: str) -> None:
    """Creates ``room`` and accepts the default configuration (an instant room, XEP-0045
    §10.1.2), whether or not the service locked it until then."""
    own = await enter(owner, room, nick)
    if "201" in _codes(own):
        reply = await owner.iq("set", f"<query xmlns='{NS_MUC_OWNER}'>"
                                      "<x xmlns='jabber:x:data' type='submit'/></query>",
                               to=room)
        assert reply.get("type") == "result", ET.tostring(reply, "unicode")


async def remote_occupant(owner: Client, guest: Client, room: str) -> None:
    """``owner`` creates ``room`` on its own server's MUC service; ``guest``, of another
    server, joins it; they see each other's presence and exchange groupchat messages."""
    await create_room(owner, room, "owner")
    await enter(guest, room, "guest")
    await owner.expect(_occupant(room, "guest"), timeout=FIRST, what="the guest's presence")
    guest.send_message(mto=room, mbody="hi all, from afar", mtype="groupchat")
    # The room reflects it to everyone, the guest included (XEP-0045 §7.4).
    await owner.expect(_groupchat(room, "guest", "hi all, from afar"), timeout=FIRST,
                       what="the guest's groupchat message")
    await guest.expect(_groupchat(room, "guest", "hi all, from afar"), what="its reflection")
    owner.send_message(mto=room, mbody="welcome", mtype="groupchat")
    await guest.expect(_groupchat(room, "owner", "welcome"), what="the owner's message")


def muc_service(server) -> str:
    """The chat service of a peer, or xmppd's default one (``conference.HOST``)."""
    return getattr(server, "muc", None) or f"conference.{server.domain}"


async def everything(server_a, server_b, *, user: str = "alice", tag: str = "") -> None:
    """All scenarios between ``user`` of each server, each server's MUC hosting once."""
    a = await login(server_a, user)
    b = await login(server_b, user)
    try:
        await exchange_messages(a, b, tag)
        await mutual_subscription(a, b)
        await remote_occupant(a, b, f"room-a{tag}@{muc_service(server_a)}")
        await remote_occupant(b, a, f"room-b{tag}@{muc_service(server_b)}")
    finally:
        await a.close()
        await b.close()
