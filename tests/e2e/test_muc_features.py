"""More group chat (XEP-0045) through slixmpp: reserved nicks (registration with a room,
§7.10 and §7.12) kept across a restart, affiliation notices to absent users (101), voice
requests, direct (XEP-0249) and mediated invitations (only from occupants, declines only to
the inviter, never to the service itself), history since a time, several
sessions under one nick, dropped connections leaving the room, the per-user room limit
counting the stored rooms, members reading the lists of private non-anonymous rooms, and which
client errors remove an occupant (333).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, bare, is_message, login, q, stanza_error
from test_muc import MUC, NS_DISCO_INFO, NS_MUC_USER, ROOM, USERS, codes, create_configured, \
    join_error, muc_login, muc_presence

NS_REGISTER = "jabber:iq:register"
NS_MUC_ADMIN = "http://jabber.org/protocol/muc#admin"
NS_DATA = "jabber:x:data"
NS_CONFERENCE = "jabber:x:conference"
FORM_REQUEST = "http://jabber.org/protocol/muc#request"


def submit_form(form_type: str, **fields: str) -> str:
    values = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return (f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>{form_type}"
            f"</value></field>{values}</x>")


def register_query(nick: str) -> str:
    form = submit_form("http://jabber.org/protocol/muc#register",
                       **{"muc#register_roomnick": nick})
    return f"<query xmlns='{NS_REGISTER}'>{form}</query>"


def role_of(e: ET.Element) -> str | None:
    item = e.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'item')}")
    return None if item is None else item.get("role")


async def members_with_nicks(client) -> dict[str, str | None]:
    reply = await client.iq(
        "get", f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='member'/></query>", to=ROOM)
    return {i.get("jid"): i.get("nick") for i in reply.iter(q(NS_MUC_ADMIN, "item"))}


@async_test(timeout=120)
async def test_reserved_nicks_and_absent_users_survive_a_restart(make_server):
    server = make_server(users=USERS)
    alice, bob, carol, dave = [await muc_login(server, u) for u in USERS]
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_persistentroom": True})
    info = await bob.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=ROOM)
    assert NS_REGISTER in {f.get("var") for f in info.iter(q(NS_DISCO_INFO, "feature"))}

    # §7.10: bob fetches the form and reserves "Bobby".
    form = await bob.iq("get", f"<query xmlns='{NS_REGISTER}'/>", to=ROOM)
    assert any(f.get("var") == "muc#register_roomnick"
               for f in form.iter(q(NS_DATA, "field"))), ET.tostring(form)
    reply = await bob.iq("set", register_query("Bobby"), to=ROOM)
    assert reply.get("type") == "result", ET.tostring(reply)
    again = await bob.iq("get", f"<query xmlns='{NS_REGISTER}'/>", to=ROOM)
    assert again.find(f".//{q(NS_REGISTER, 'registered')}") is not None
    # §7.12: bob discovers his reserved nick.
    mine = await bob.iq(
        "get", f"<query xmlns='{NS_DISCO_INFO}' node='x-roomuser-item'/>", to=ROOM)
    assert [i.get("name") for i in mine.iter(q(NS_DISCO_INFO, "identity"))] == ["Bobby"]
    # Nobody else may use it, nor register it.
    assert await join_error(carol, ROOM, "Bobby") == "conflict"
    taken = await carol.iq("set", register_query("Bobby"), to=ROOM)
    assert taken.get("type") == "error"

    # §9.3: dave is not in the room and learns by message (101) that he is a member now.
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid=server.jid("dave"))
    note = await dave.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.get("from") == ROOM
        and "101" in codes(e), what="affiliation notice")
    item = note.find(f".//{q(NS_MUC_USER, 'item')}")
    assert (item.get("affiliation"), item.get("jid")) == ("member", server.jid("dave"))
    assert await members_with_nicks(alice) == {
        server.jid("bob"): "Bobby", server.jid("dave"): None}
    for c in (alice, bob, carol, dave):
        await c.close()

    server.restart()
    alice = await muc_login(server, "alice")
    assert await members_with_nicks(alice) == {
        server.jid("bob"): "Bobby", server.jid("dave"): None}
    carol = await muc_login(server, "carol")
    assert await join_error(carol, ROOM, "Bobby") == "conflict"
    bob = await muc_login(server, "bob")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "Bobby", maxstanzas=0, timeout=10)


@async_test(timeout=60)
async def test_voice_request_is_approved_by_a_moderator(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_moderatedroom": True})
    joined, _, _, _ = await bob.plugin["xep_0045"].join_muc_wait(
        ROOM, "bob", maxstanzas=0, timeout=10)
    assert role_of(joined.xml) == "visitor"

    bob.plugin["xep_0045"].request_voice(ROOM, "participant")
    request = await alice.expect(
        lambda e: e.tag == q(CLIENT_NS, "message") and e.get("from") == ROOM
        and e.find(f"{q(NS_DATA, 'x')}") is not None, what="voice request")
    fields = {f.get("var"): f.findtext(q(NS_DATA, "value"))
              for f in request.iter(q(NS_DATA, "field"))}
    assert fields["FORM_TYPE"] == FORM_REQUEST and fields["muc#roomnick"] == "bob"

    approval = alice.make_message(mto=ROOM)
    approval.xml.append(ET.fromstring(submit_form(
        FORM_REQUEST, **{"muc#role": "participant", "muc#roomnick": "bob",
                         "muc#request_allow": "true"})))
    approval.send()
    await bob.expect(lambda e: muc_presence(f"{ROOM}/bob")(e) and role_of(e) == "participant",
                     what="voice granted")
    bob.send_message(mto=ROOM, mbody="thanks", mtype="groupchat")
    await alice.expect_message("thanks")


@async_test(timeout=60)
async def test_direct_invitation_arrives_intact_and_declines_reach_the_inviter(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    carol = await muc_login(server, "carol")
    alice.register_plugin("xep_0249")
    await create_configured(alice, ROOM, "al")

    # XEP-0249: user to user, through the core unchanged.
    alice.plugin["xep_0249"].send_invitation(
        server.jid("bob"), ROOM, password="pw", reason="come & see")
    direct = await bob.expect(
        lambda e: e.find(q(NS_CONFERENCE, "x")) is not None, what="direct invitation")
    x = direct.find(q(NS_CONFERENCE, "x"))
    assert (x.get("jid"), x.get("password"), x.get("reason")) == (ROOM, "pw", "come & see")
    assert bare(direct.get("from")) == server.jid("alice")

    # §7.8.2: a declined mediated invitation goes back to the inviter through the room.
    alice.plugin["xep_0045"].invite(ROOM, server.jid("carol"), reason="join us")
    await carol.expect(
        lambda e: e.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'invite')}") is not None,
        what="invitation")
    carol.plugin["xep_0045"].decline(ROOM, server.jid("alice"), reason="busy")
    declined = await alice.expect(
        lambda e: e.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'decline')}") is not None,
        what="decline")
    d = declined.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'decline')}")
    assert declined.get("from") == ROOM
    assert d.get("from") == server.jid("carol") and d.findtext(q(NS_MUC_USER, "reason")) == "busy"


def has_muc_user(child: str):
    path = f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, child)}"
    return lambda e: is_message(e) and e.find(path) is not None


async def refusal(client) -> str | None:
    err = await client.expect(lambda e: is_message(e) and e.get("type") == "error",
                              what="error message")
    assert err.get("from") == ROOM, ET.tostring(err)
    return stanza_error(err)


@async_test(timeout=60)
async def test_mediated_invitations_need_an_occupant_and_declines_reach_only_the_inviter(
        server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    carol = await muc_login(server, "carol")
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_allowinvites": True})
    carol_muc = carol.plugin["xep_0045"]

    # §7.8.2: only an occupant invites through the room.
    carol_muc.invite(ROOM, server.jid("bob"), reason="from outside")
    assert await refusal(carol) == "not-acceptable"
    # A decline from someone never invited reaches nobody.
    carol_muc.decline(ROOM, server.jid("alice"), reason="never asked")
    assert await refusal(carol) == "not-acceptable"
    # Neither an invitation nor a decline may point the room at this service.
    carol_muc.decline(ROOM, ROOM)
    assert await refusal(carol) == "bad-request"
    alice.plugin["xep_0045"].invite(ROOM, ROOM)
    assert await refusal(alice) == "bad-request"
    alice.plugin["xep_0045"].invite(ROOM, f"other@{MUC}")
    assert await refusal(alice) == "bad-request"

    # bob enters and invites carol. Her decline names alice, yet it goes to bob, who invited
    # her, and to nobody else.
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    bob.plugin["xep_0045"].invite(ROOM, server.jid("carol"), reason="join us")
    invitation = await carol.expect(has_muc_user("invite"), what="invitation")
    assert invitation.find(f".//{q(NS_MUC_USER, 'invite')}").get("from") == server.jid("bob")
    carol_muc.decline(ROOM, server.jid("alice"), reason="busy")
    declined = await bob.expect(has_muc_user("decline"), what="decline")
    d = declined.find(f".//{q(NS_MUC_USER, 'decline')}")
    assert declined.get("from") == ROOM
    assert d.get("from") == server.jid("carol") and d.findtext(q(NS_MUC_USER, "reason")) == "busy"
    # One invitation, one decline.
    carol_muc.decline(ROOM, server.jid("bob"), reason="still busy")
    assert await refusal(carol) == "not-acceptable"
    # The room handles stanzas in order: what it sent alice or bob before this line has arrived
    # with it.
    bob.send_message(mto=ROOM, mbody="done", mtype="groupchat")
    await alice.expect_message("done")
    await bob.expect_message("done")
    assert not [e for e in alice.received if has_muc_user("decline")(e)], alice.received
    assert not [e for e in bob.received if has_muc_user("invite")(e)
                or has_muc_user("decline")(e)], bob.received


@async_test(timeout=90)
async def test_history_since_a_time_and_maxchars(server):
    alice = await muc_login(server, "alice")
    bob = await muc_login(server, "bob")
    carol = await muc_login(server, "carol")
    await create_configured(alice, ROOM, "al")
    alice.send_message(mto=ROOM, mbody="old", mtype="groupchat")
    await alice.expect_message("old")
    # A `since` read just before a message keeps that message, even when the room takes it in
    # the same millisecond (the room's clock has whole milliseconds, `since` has microseconds):
    # each round is another chance of that.
    for i in range(5):
        # The cut must fall in a later millisecond than the message before it.
        await asyncio.sleep(0.01)
        cut = dt.datetime.now(dt.timezone.utc)
        alice.send_message(mto=ROOM, mbody=f"new {i}", mtype="groupchat")
        await alice.expect_message(f"new {i}")
        _, _, _, history = await bob.plugin["xep_0045"].join_muc_wait(
            ROOM, "bob", since=cut, timeout=10)
        assert [m["body"] for m in history] == [f"new {i}"], cut.isoformat()
        bob.plugin["xep_0045"].leave_muc(ROOM, "bob")
        await bob.expect(muc_presence(f"{ROOM}/bob", "unavailable"))
    _, _, _, history = await carol.plugin["xep_0045"].join_muc_wait(
        ROOM, "carol", maxchars=0, timeout=10)
    assert history == []


@async_test(timeout=60)
async def test_sessions_of_one_nick_and_dropped_connections(server):
    alice = await muc_login(server, "alice")
    await create_configured(alice, ROOM, "al")
    bob = await muc_login(server, "bob")
    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    await alice.expect(muc_presence(f"{ROOM}/bob"))
    # A second session that never sent initial presence: only directed presence to the room.
    phone = await login(server, "bob", resource="phone", presence=False)
    phone.register_plugin("xep_0045")
    await phone.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)

    # The phone asks al something: the answer comes back to the phone, not to bob's first
    # session.
    answer = await phone.iq("get", f"<query xmlns='{NS_DISCO_INFO}'/>", to=f"{ROOM}/al")
    assert answer.get("type") == "result", ET.tostring(answer)
    assert answer.get("from") == f"{ROOM}/al"

    # The phone's connection drops: the core sends unavailable for it, bob is still there.
    alice.received.clear()
    phone.kill()
    await alice.expect_none(muc_presence(f"{ROOM}/bob", "unavailable"), within=1.0)
    bob.send_message(mto=ROOM, mbody="still here", mtype="groupchat")
    await alice.expect_message("still here")
    # Then the last session drops: bob leaves.
    bob.kill()
    await alice.expect(muc_presence(f"{ROOM}/bob", "unavailable"))


@async_test(timeout=90)
async def test_room_limit_counts_owned_rooms_after_a_restart(make_server):
    server = make_server(muc={"max_rooms_per_user": 1})
    alice = await muc_login(server, "alice")
    await create_configured(alice, f"one@{MUC}", "al",
                            **{"muc#roomconfig_persistentroom": True})
    await alice.close()
    server.restart()
    alice = await muc_login(server, "alice")
    assert await join_error(alice, f"two@{MUC}", "al") == "resource-constraint"
    bob = await muc_login(server, "bob")
    await bob.plugin["xep_0045"].join_muc_wait(f"two@{MUC}", "bob", maxstanzas=0, timeout=10)


@async_test(timeout=60)
async def test_members_read_lists_of_private_rooms_and_only_lost_clients_are_removed(server):
    alice, bob, carol = [await muc_login(server, u) for u in ("alice", "bob", "carol")]
    await create_configured(alice, ROOM, "al", **{
        "muc#roomconfig_membersonly": True, "muc#roomconfig_whois": "anyone"})
    muc = alice.plugin["xep_0045"]
    for user in ("bob", "carol"):
        await muc.set_affiliation(ROOM, "member", jid=server.jid(user))
    # A member of a members-only non-anonymous room reads who belongs (what OMEMO needs)...
    lists = bob.plugin["xep_0045"]
    members = await lists.get_affiliation_list(ROOM, "member", timeout=10)
    assert {str(j) for j in members} == {server.jid("bob"), server.jid("carol")}
    owners = await lists.get_affiliation_list(ROOM, "owner", timeout=10)
    assert [str(j) for j in owners] == [server.jid("alice")]
    # ...but not who is banned.
    refused = await bob.iq(
        "get", f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast'/></query>", to=ROOM)
    assert refused.get("type") == "error", ET.tostring(refused)

    await bob.plugin["xep_0045"].join_muc_wait(ROOM, "bob", maxstanzas=0, timeout=10)
    await alice.expect(muc_presence(f"{ROOM}/bob"))

    def error_to_al(condition: str) -> None:
        err = bob.make_message(mto=f"{ROOM}/al", mtype="error")
        err["error"]["type"] = "cancel"
        err["error"]["condition"] = condition
        err.send()

    # A client refusing one message (it does not support it) stays in the room.
    error_to_al("feature-not-implemented")
    await alice.expect_none(muc_presence(f"{ROOM}/bob", "unavailable"), within=1.0)
    bob.send_message(mto=ROOM, mbody="still here", mtype="groupchat")
    await alice.expect_message("still here")
    # An error saying the client is unreachable removes it (333).
    error_to_al("service-unavailable")
    await alice.expect(muc_presence(f"{ROOM}/bob", "unavailable", "333"))
