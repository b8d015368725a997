"""Message archive (XEP-0313): what is archived, paging with slixmpp's XEP-0313 plugin (and
raw XML from a second, hand-written client), the filters of ``#extended``, full-text search
(XEP-0431), preferences (XEP-0441), stanza ids on delivered and offline copies (XEP-0359),
durability across a restart, and retention."""

from __future__ import annotations

import asyncio
import datetime
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, is_message, login, q, settled
from conftest import PASSWORD
from raw import RawClient, new_id, stanza_error_condition

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
FORWARD = "urn:xmpp:forward:0"
SID = "urn:xmpp:sid:0"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def body(msg: ET.Element) -> str | None:
    return msg.findtext(q(CLIENT_NS, "body"))


def form(**fields) -> str:
    """A MAM query form; a list value gives a multi-valued field."""
    out = ["<x xmlns='jabber:x:data' type='submit'>",
           f"<field var='FORM_TYPE' type='hidden'><value>{MAM}</value></field>"]
    for var, value in fields.items():
        var = {"before_id": "before-id", "after_id": "after-id",
               "fulltext": "{urn:xmpp:fulltext:0}fulltext"}.get(var, var)
        values = value if isinstance(value, list) else [value]
        out.append(f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values)
                   + "</field>")
    out.append("</x>")
    return "".join(out)


async def query(client, *, fields: dict | None = None, rsm: str = "", flip: bool = False,
                to: str | None = None):
    """Runs a query with raw XML; returns (IQ reply, [(archive id, forwarded message)]) with
    the results that arrived before the reply, in the order they arrived."""
    qid = new_id("mam")
    payload = (f"<query xmlns='{MAM}' queryid='{qid}'>" + (form(**fields) if fields else "")
               + (f"<set xmlns='{RSM}'>{rsm}</set>" if rsm else "")
               + ("<flip-page/>" if flip else "") + "</query>")
    reply = await client.iq("set", payload, to=to)
    results = []
    for e in list(client.received):
        r = e.find(q(MAM, "result"))
        if e.tag == q(CLIENT_NS, "message") and r is not None and r.get("queryid") == qid:
            client.received.remove(e)
            fwd = r.find(f"{q(FORWARD, 'forwarded')}/{q(CLIENT_NS, 'message')}")
            results.append((r.get("id"), fwd))
    return reply, results


def fin(reply: ET.Element) -> ET.Element:
    f = reply.find(q(MAM, "fin"))
    assert f is not None, ET.tostring(reply, "unicode")
    return f


def bodies(results) -> list[str | None]:
    return [body(m) for _, m in results]


async def mam_client(server, user: str, **kw):
    client = await login(server, user, **kw)
    client.register_plugin("xep_0313")
    return client


async def iterate(client, *, reverse: bool = False, max_: int = 10, **kw) -> list[str]:
    """Every body of the own archive through slixmpp's MAM iterator (RSM to the end)."""
    out = []
    async for msg in client.plugin["xep_0313"].iterate(rsm={"max": max_}, reverse=reverse, **kw):
        out.append(msg["mam_result"]["forwarded"]["stanza"]["body"])
    return out


@async_test(timeout=150.0)
async def test_paging_forward_and_backward_to_the_end_with_slixmpp(server):
    alice = await login(server, "alice")
    bob = await mam_client(server, "bob")
    sent = [f"message {i}" for i in range(23)]
    for text in sent:
        alice.chat("bob@localhost", text)
    await bob.expect_message(sent[-1])
    await settled(alice)

    assert await iterate(bob, max_=10) == sent
    assert await iterate(bob, max_=10, reverse=True) == list(reversed(sent))
    # The sender's archive has its side of the conversation too.
    alice.register_plugin("xep_0313")
    assert await iterate(alice, max_=7) == sent

    # fin/@complete tells where the set ends, in either direction.
    reply, results = await query(bob, rsm="<max>20</max>")
    assert bodies(results) == sent[:20] and fin(reply).get("complete") in (None, "false")
    last = fin(reply).findtext(f"{q(RSM, 'set')}/{q(RSM, 'last')}")
    reply, results = await query(bob, rsm=f"<max>20</max><after>{last}</after>")
    assert bodies(results) == sent[20:] and fin(reply).get("complete") == "true"
    reply, results = await query(bob, rsm="<max>5</max><before/>")
    assert bodies(results) == sent[-5:] and fin(reply).get("complete") in (None, "false")
    reply, results = await query(bob, rsm="<max>5</max><before/>", flip=True)
    assert bodies(results) == list(reversed(sent[-5:]))
    first = fin(reply).findtext(f"{q(RSM, 'set')}/{q(RSM, 'first')}")
    assert first == results[-1][0], "first/last name the page oldest to newest"


@async_test()
async def test_stanza_id_on_delivered_and_offline_copies(server):
    alice = await login(server, "alice")
    bob = await mam_client(server, "bob")
    # A stanza-id the sender forges for bob's archive is removed; its origin-id stays.
    alice.send_raw(
        "<message to='bob@localhost' type='chat' id='m1'><body>live</body>"
        f"<stanza-id xmlns='{SID}' by='bob@localhost' id='forged'/>"
        f"<origin-id xmlns='{SID}' id='origin-1'/></message>")
    live = await bob.expect_message("live")
    ids = live.findall(q(SID, "stanza-id"))
    assert len(ids) == 1 and ids[0].get("by") == "bob@localhost", ET.tostring(live, "unicode")
    assert ids[0].get("id") != "forged"
    assert live.find(q(SID, "origin-id")).get("id") == "origin-1"
    reply, results = await query(bob, fields={"ids": ids[0].get("id")})
    assert reply.get("type") == "result" and bodies(results) == ["live"]

    alice.chat("carol@localhost", "while you were out")
    await settled(alice)
    carol = await mam_client(server, "carol")
    offline = await carol.expect_message("while you were out")
    sid = offline.find(q(SID, "stanza-id"))
    assert sid is not None and sid.get("by") == "carol@localhost", ET.tostring(offline, "unicode")
    reply, results = await query(carol)
    assert [(i, body(m)) for i, m in results] == [(sid.get("id"), "while you were out")], \
        "archived once, with the id the offline copy carries"


@async_test(timeout=120.0)
async def test_filters_ids_fulltext_and_errors(server):
    alice = await login(server, "alice", resource="phone")
    carol = await login(server, "carol")
    bob = await mam_client(server, "bob")
    alice.chat("bob@localhost", "the quick brown fox")
    await bob.expect_message("the quick brown fox")
    middle = datetime.datetime.now(datetime.timezone.utc)
    # Stamps are milliseconds: make sure the next messages are archived after `middle`.
    await asyncio.sleep(0.05)
    carol.chat("bob@localhost", "jumps over the lazy dog")
    await bob.expect_message("jumps over the lazy dog")
    alice.chat("bob@localhost", "QUICK thinking")
    await bob.expect_message("QUICK thinking")

    reply, everything = await query(bob)
    ids = [i for i, _ in everything]
    assert bodies(everything) == ["the quick brown fox", "jumps over the lazy dog",
                                  "QUICK thinking"]

    _, r = await query(bob, fields={"with": "alice@localhost"})
    assert bodies(r) == ["the quick brown fox", "QUICK thinking"]
    _, r = await query(bob, fields={"with": "alice@localhost/phone"})
    assert len(r) == 2
    _, r = await query(bob, fields={"with": "alice@localhost/laptop"})
    assert r == []
    stamp = middle.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    _, r = await query(bob, fields={"start": stamp})
    assert bodies(r) == ["jumps over the lazy dog", "QUICK thinking"]
    _, r = await query(bob, fields={"end": stamp})
    assert bodies(r) == ["the quick brown fox"]
    _, r = await query(bob, fields={"after_id": ids[0], "before_id": ids[2]})
    assert bodies(r) == ["jumps over the lazy dog"]
    _, r = await query(bob, fields={"ids": [ids[2], ids[0]]})
    assert bodies(r) == ["the quick brown fox", "QUICK thinking"]
    _, r = await query(bob, fields={"fulltext": "quick"})
    assert bodies(r) == ["the quick brown fox", "QUICK thinking"]
    _, r = await query(bob, fields={"fulltext": "quick", "with": "carol@localhost"})
    assert r == []
    # Full text is scoped to the owner: alice's archive has her own two messages only.
    alice.register_plugin("xep_0313")
    _, r = await query(alice, fields={"fulltext": "dog"})
    assert r == []

    for fields, rsm, condition in [
        ({"after_id": "no-such-id"}, "", "item-not-found"),
        ({}, "<after>999999999</after>", "item-not-found"),
        ({"colour": "red"}, "", "bad-request"),
        ({"start": "last tuesday"}, "", "bad-request"),
    ]:
        reply, r = await query(bob, fields=fields, rsm=rsm)
        assert reply.get("type") == "error" and r == [], (fields, rsm)
        assert stanza_error_condition(reply) == condition, ET.tostring(reply, "unicode")

    # Only the owner may read an archive.
    reply, _ = await query(alice, to="bob@localhost")
    assert stanza_error_condition(reply) == "forbidden"

    # The fields, the metadata, and the features in the account's disco#info.
    form_ = await bob.plugin["xep_0313"].get_fields()
    offered = {f.get("var") for f in form_.xml.iter("{jabber:x:data}field")}
    assert {"with", "start", "end", "before-id", "after-id", "ids",
            "{urn:xmpp:fulltext:0}fulltext"} <= offered, offered
    meta = await bob.plugin["xep_0313"].get_archive_metadata()
    assert meta["mam_metadata"]["start"]["id"] == ids[0]
    assert meta["mam_metadata"]["end"]["id"] == ids[2]
    info = await bob.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to="bob@localhost")
    features = {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}
    assert {MAM, MAM + "#extended", "urn:xmpp:fulltext:0"} <= features


@async_test()
async def test_what_is_archived(server):
    alice = await login(server, "alice")
    bob = await mam_client(server, "bob")
    sends = [
        ("<message to='bob@localhost' type='chat'><body>kept</body></message>", True),
        ("<message to='bob@localhost' type='headline'><body>headline</body></message>", False),
        ("<message to='bob@localhost' type='chat'><body>secret</body>"
         "<no-store xmlns='urn:xmpp:hints'/></message>", False),
        ("<message to='bob@localhost' type='chat'>"
         "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>", False),
        ("<message to='bob@localhost' type='chat' id='e1'>"
         "<encrypted xmlns='urn:xmpp:omemo:2'><header sid='1'/></encrypted></message>", True),
        ("<message to='bob@localhost' type='chat'><reactions xmlns='urn:xmpp:reactions:0' "
         "id='x'><reaction>+1</reaction></reactions></message>", True),
        ("<message to='bob@localhost' type='chat'><body>last</body></message>", True),
    ]
    for xml, _ in sends:
        alice.send_raw(xml)
    await bob.expect_message("last")
    _, r = await query(bob)
    kinds = []
    for _, m in r:
        if body(m):
            kinds.append(body(m))
        elif m.find("{urn:xmpp:omemo:2}encrypted") is not None:
            kinds.append("omemo")
        elif m.find("{urn:xmpp:reactions:0}reactions") is not None:
            kinds.append("reaction")
    assert kinds == ["kept", "omemo", "reaction", "last"]


@async_test(timeout=120.0)
async def test_preferences(server):
    alice = await login(server, "alice")
    carol = await login(server, "carol")
    bob = await mam_client(server, "bob")
    reply = await bob.iq("get", f"<prefs xmlns='{MAM}'/>")
    assert reply.find(q(MAM, "prefs")).get("default") == "always"
    reply = await bob.iq(
        "set", f"<prefs xmlns='{MAM}' default='never'><always><jid>carol@localhost</jid>"
        "</always><never/></prefs>")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    alice.chat("bob@localhost", "from alice")
    carol.chat("bob@localhost", "from carol")
    await bob.expect_message("from alice")
    delivered = await bob.expect_message("from carol")
    _, r = await query(bob)
    assert bodies(r) == ["from carol"]
    assert delivered.find(q(SID, "stanza-id")) is not None
    reply = await bob.iq("get", f"<prefs xmlns='{MAM}'/>")
    prefs = reply.find(q(MAM, "prefs"))
    assert prefs.get("default") == "never"
    assert [j.text for j in prefs.iter(q(MAM, "jid"))] == ["carol@localhost"]
    # Alice's own preferences still archive her side.
    alice.register_plugin("xep_0313")
    _, r = await query(alice)
    assert bodies(r) == ["from alice"]


@async_test(timeout=120.0)
async def test_archive_survives_a_restart(server):
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    alice.chat("bob@localhost", "remember me")
    await bob.expect_message("remember me")
    await alice.close()
    await bob.close()
    server.restart()
    bob = await mam_client(server, "bob")
    assert await iterate(bob) == ["remember me"]


@async_test(timeout=120.0)
async def test_retention_deletes_old_messages(make_server):
    # About a second and a half of retention, checked every second.
    server = make_server(mam={"retention_days": 0.00002, "purge_interval_secs": 1})
    alice = await login(server, "alice")
    bob = await mam_client(server, "bob")
    alice.chat("bob@localhost", "soon gone")
    delivered = await bob.expect_message("soon gone")
    assert delivered.find(q(SID, "stanza-id")) is not None, "archived first"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while True:
        _, r = await query(bob)
        if not r:
            break
        assert loop.time() < deadline, "the message outlived its retention"
        await asyncio.sleep(0.5)


def raw_login(server, user: str) -> RawClient:
    client = RawClient(server.starttls_port)
    client.login(user, PASSWORD)
    return client


def test_raw_client_pages_back_through_the_archive(server):
    """A second implementation: hand-written XML over a plain socket, paging backwards from
    the latest page with <before/> until <fin complete='true'/>."""
    sender = raw_login(server, "alice")
    reader = raw_login(server, "bob")
    for i in range(7):
        sender.send(f"<message to='bob@localhost' type='chat'><body>raw {i}</body></message>")
    sender.iq("get", "<ping xmlns='urn:xmpp:ping'/>")  # everything before it was handled
    got: list[str] = []
    before = ""
    while True:
        qid = new_id("q")
        iq_id = new_id("iq")
        reader.send(f"<iq type='set' id='{iq_id}'><query xmlns='{MAM}' queryid='{qid}'>"
                    f"<set xmlns='{RSM}'><max>3</max><before>{before}</before></set>"
                    "</query></iq>")
        page = []
        while True:
            e = reader.next_element(timeout=10)
            if e.tag == q(CLIENT_NS, "iq") and e.get("id") == iq_id:
                break
            r = e.find(q(MAM, "result"))
            if r is not None and r.get("queryid") == qid:
                page.append(r.findtext(f"{q(FORWARD, 'forwarded')}/{q(CLIENT_NS, 'message')}/"
                                       f"{q(CLIENT_NS, 'body')}"))
        assert e.get("type") == "result", ET.tostring(e, "unicode")
        got = page + got
        f = e.find(q(MAM, "fin"))
        if f.get("complete") == "true":
            break
        before = f.findtext(f"{q(RSM, 'set')}/{q(RSM, 'first')}")
    assert got == [f"raw {i}" for i in range(7)]
    sender.close()
    reader.close()


@async_test(timeout=60)
async def test_the_roster_default_counts_shared_roster_groups(make_server):
    # Alice is in bob's roster only through a shared group; carol in no roster of his.
    server = make_server(shared_roster={"group": [
        {"name": "Staff", "members": ["alice@localhost", "bob@localhost"]}]})
    alice = await login(server, "alice")
    carol = await login(server, "carol")
    bob = await mam_client(server, "bob")
    reply = await bob.iq("set", f"<prefs xmlns='{MAM}' default='roster'><always/><never/></prefs>")
    assert reply.get("type") == "result", ET.tostring(reply, "unicode")
    alice.chat("bob@localhost", "from a colleague")
    carol.chat("bob@localhost", "from a stranger")
    await bob.expect_message("from a colleague")
    await bob.expect_message("from a stranger")
    _, r = await query(bob)
    assert bodies(r) == ["from a colleague"]
