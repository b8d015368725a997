"""Push notifications (XEP-0357) with slixmpp clients. The app server is a client of the same
server, ``appserver@localhost/push``, that records the pubsub publishes it gets and answers
each with a result or, per node, with an error.

A notification goes out when a message reaches an account with push enabled while it has no
session (the message goes to offline storage) or reaches a session that stream management
parked (its connection was cut without a closing tag). By default it tells neither the sender
nor the body. Disabling stops them; an app server that keeps failing loses the registration.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from clients import CLIENT_NS, async_test, login, q, settled
from test_sm import SAFETY, logged, reconnect_and_resume, sm_login

PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
DATA = "jabber:x:data"
DISCO = "http://jabber.org/protocol/disco#info"
APP_SERVER = "appserver@localhost/push"
USERS = ("alice", "bob", "appserver")


async def app_server(server, errors: dict[str, tuple[str, str]] | None = None):
    """Logs in the app server. It answers a publish to a node named in ``errors`` with that
    (error type, condition), every other with a result."""
    errors = errors or {}
    client = await login(server, "appserver", resource="push")

    def answer(iq) -> None:
        if iq["type"] != "set":
            return
        node = publish_of(iq.xml).get("node")
        reply = iq.reply(clear=True)
        if node in errors:
            kind, condition = errors[node]
            reply["type"] = "error"
            reply["error"]["type"] = kind
            reply["error"]["condition"] = condition
        reply.send()

    client.register_handler(Callback(
        "answer publishes", MatchXPath(f"{{{CLIENT_NS}}}iq/{{{PUBSUB}}}pubsub"), answer))
    return client


def publish_of(iq: ET.Element) -> ET.Element:
    return iq.find(f"{q(PUBSUB, 'pubsub')}/{q(PUBSUB, 'publish')}")


def is_publish(node: str):
    def match(e: ET.Element) -> bool:
        if e.tag != q(CLIENT_NS, "iq") or e.find(q(PUBSUB, "pubsub")) is None:
            return False
        publish = publish_of(e)
        return publish is not None and publish.get("node") == node
    return match


def fields(form: ET.Element) -> dict[str, list[str]]:
    return {f.get("var"): [v.text for v in f.findall(q(DATA, "value"))]
            for f in form.findall(q(DATA, "field"))}


def summary(iq: ET.Element) -> dict[str, list[str]]:
    form = publish_of(iq).find(
        f"{q(PUBSUB, 'item')}/{q(PUSH, 'notification')}/{q(DATA, 'x')}")
    assert form is not None, ET.tostring(iq)
    return fields(form)


async def enable(client, node: str, form: str = "") -> None:
    reply = await client.iq(
        "set", f"<enable xmlns='{PUSH}' jid='{APP_SERVER}' node='{node}'>{form}</enable>")
    assert reply.get("type") == "result", ET.tostring(reply)


async def disable(client, node: str | None = None) -> None:
    attr = f" node='{node}'" if node else ""
    reply = await client.iq("set", f"<disable xmlns='{PUSH}' jid='{APP_SERVER}'{attr}/>")
    assert reply.get("type") == "result", ET.tostring(reply)


PUBLISH_OPTIONS = (
    f"<x xmlns='{DATA}' type='submit'>"
    "<field var='FORM_TYPE'><value>http://jabber.org/protocol/pubsub#publish-options</value>"
    "</field><field var='secret'><value>s3cr3t</value></field></x>")


@async_test(timeout=120.0)
async def test_an_offline_account_gets_a_notification_without_sender_or_body(make_server):
    server = make_server(users=USERS)
    apps = await app_server(server)
    bob = await login(server, "bob", resource="phone")
    info = await bob.iq("get", f"<query xmlns='{DISCO}'/>", to=server.jid("bob"))
    features = [f.get("var") for f in info.iter(q(DISCO, "feature"))]
    assert PUSH in features, ET.tostring(info)
    await enable(bob, "n1", PUBLISH_OPTIONS)
    await bob.close()

    alice = await login(server, "alice")
    alice.chat(server.jid("bob"), "meet me at the old mill")
    iq = await apps.expect(is_publish("n1"), timeout=SAFETY, what="the notification")
    assert iq.get("from") == server.jid("bob"), ET.tostring(iq)
    xml = ET.tostring(iq, "unicode")
    assert "old mill" not in xml and "alice" not in xml, xml
    got = summary(iq)
    assert got["FORM_TYPE"] == ["urn:xmpp:push:summary"], got
    assert got["message-count"] == ["1"], got
    assert "last-message-sender" not in got and "last-message-body" not in got, got
    # The publish options the client gave are carried with every notification.
    options = iq.find(f"{q(PUBSUB, 'pubsub')}/{q(PUBSUB, 'publish-options')}/{q(DATA, 'x')}")
    assert options is not None, xml
    assert fields(options)["secret"] == ["s3cr3t"], xml

    # The message itself waited in offline storage.
    bob = await login(server, "bob", resource="phone")
    await bob.expect_message("meet me at the old mill", timeout=SAFETY)


@async_test(timeout=120.0)
async def test_sender_and_body_when_the_operator_allows(make_server):
    server = make_server(users=USERS, push={"include_body": True, "include_sender": True})
    apps = await app_server(server)
    bob = await login(server, "bob", resource="phone")
    await enable(bob, "n1")
    await bob.close()

    alice = await login(server, "alice")
    alice.chat(server.jid("bob"), "hello there")
    got = summary(await apps.expect(is_publish("n1"), timeout=SAFETY))
    assert got["last-message-body"] == ["hello there"], got
    assert got["last-message-sender"][0].startswith(server.jid("alice")), got


@async_test(timeout=180.0)
async def test_a_session_parked_by_stream_management_gets_a_notification(make_server):
    server = make_server(users=USERS, c2s={"resume_timeout_secs": 600})
    apps = await app_server(server)
    alice = await login(server, "alice")
    bob = await sm_login(server, "bob")
    await enable(bob, "phone-node")
    # While connected, nothing is published.
    alice.chat(str(bob.boundjid), "you are here")
    await bob.expect_message("you are here", timeout=SAFETY)

    since = server.line_count()
    bob.kill()
    await logged(server, "session detached from its connection", since)
    alice.chat(str(bob.boundjid), "wake up")
    iq = await apps.expect(is_publish("phone-node"), timeout=SAFETY, what="the notification")
    assert "wake up" not in ET.tostring(iq, "unicode")
    assert summary(iq)["message-count"] == ["1"]
    # Only one was published, for the message that came while parked.
    assert not [e for e in apps.received if is_publish("phone-node")(e)]

    await reconnect_and_resume(server, bob)
    await bob.expect_message("wake up", timeout=SAFETY)


@async_test(timeout=120.0)
async def test_disable_stops_notifications(make_server):
    server = make_server(users=USERS)
    apps = await app_server(server)
    bob = await login(server, "bob", resource="phone")
    # Published in the order they were enabled, one after the other to the same app server:
    # once the second node's notification arrived, the first's would have arrived before it.
    await enable(bob, "old")
    await enable(bob, "kept")
    await disable(bob, "old")
    await bob.close()

    alice = await login(server, "alice")
    alice.chat(server.jid("bob"), "one")
    await apps.expect(is_publish("kept"), timeout=SAFETY)
    assert not [e for e in apps.received if is_publish("old")(e)]

    # Without a node, every node of that app server.
    bob = await login(server, "bob", resource="phone")
    await bob.expect_message("one", timeout=SAFETY)
    await enable(bob, "old")
    await disable(bob)
    await enable(bob, "later")
    await bob.close()
    alice.chat(server.jid("bob"), "two")
    await apps.expect(is_publish("later"), timeout=SAFETY)
    assert not [e for e in apps.received if is_publish("old")(e) or is_publish("kept")(e)]


@async_test(timeout=180.0)
async def test_an_app_server_answering_errors_loses_the_registration(make_server):
    server = make_server(users=USERS, push={"max_errors": 2})
    apps = await app_server(server, errors={
        "gone": ("cancel", "item-not-found"),
        "failing": ("wait", "internal-server-error"),
    })
    bob = await login(server, "bob", resource="phone")
    for node in ("gone", "failing", "good"):
        await enable(bob, node)
    await bob.close()
    alice = await login(server, "alice")

    async def round_(i: int, expected: list[str]) -> None:
        alice.chat(server.jid("bob"), f"message {i}")
        # "good" was enabled last, so it is published last: once it is here, the others that
        # were published are here too.
        await apps.expect(is_publish("good"), timeout=SAFETY, what=f"notification {i}")
        got = [n for n in ("gone", "failing") if [e for e in apps.received if is_publish(n)(e)]]
        assert got == expected, (i, got)
        for n in got:
            await apps.expect(is_publish(n))
        # The app server's answers are handled before the next message.
        await settled(apps)

    since = server.line_count()
    await round_(1, ["gone", "failing"])  # item-not-found: removed at once
    await logged(server, "push registration removed after errors", since)
    await round_(2, ["failing"])  # the second failure in a row: removed
    await logged(server, "push registration removed after errors", since, count=2)
    await round_(3, [])
    await round_(4, [])
