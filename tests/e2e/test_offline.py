"""Offline messages (XEP-0160): stored while the recipient has no available resource,
delivered with an XEP-0203 ``<delay/>`` at the next available presence, capped per user
(excess bounced with ``<service-unavailable/>``), and durable across a crash of the server."""

import datetime

from clients import DELAY_NS, async_test, is_message, login, q, settled, stanza_error


def delay_of(message):
    delay = message.find(q(DELAY_NS, "delay"))
    assert delay is not None, "offline message delivered without <delay/>"
    return delay


@async_test()
async def test_offline_message_delivered_with_delay(server):
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "while you were out")
    alice.chat("bob@localhost", "and another one")
    await settled(alice)

    # Logging in without presence is not "available": nothing yet (RFC 6121 §8.5.2.2).
    bob = await login(server, "bob", presence=False)
    await bob.expect_none(is_message, 1.0, "offline message before initial presence")
    bob.send_presence()
    first = await bob.expect_message("while you were out", "alice@localhost")
    second = await bob.expect_message("and another one", "alice@localhost")
    for message in (first, second):
        delay = delay_of(message)
        assert delay.get("from") == "localhost", delay.attrib
        stamp = datetime.datetime.fromisoformat(delay.get("stamp").replace("Z", "+00:00"))
        now = datetime.datetime.now(datetime.timezone.utc)
        assert before - datetime.timedelta(seconds=2) <= stamp <= now, delay.get("stamp")
    assert first.get("to", "").startswith("bob@localhost")

    # Delivered once: a second session gets nothing more.
    await bob.close()
    again = await login(server, "bob")
    await again.expect_none(is_message, 1.0, "offline message delivered twice")


@async_test()
async def test_offline_cap_bounces_with_service_unavailable(make_server):
    server = make_server(offline={"max_per_user": 2})
    alice = await login(server, "alice")
    for i in range(3):
        alice.send_message(mto="bob@localhost", mbody=f"number {i}", mtype="chat")
    bounce = await alice.expect(lambda e: is_message(e) and e.get("type") == "error",
                                what="bounce of the message over the cap")
    assert stanza_error(bounce) == "service-unavailable"
    assert bounce.get("from") == "bob@localhost"
    assert bounce.findtext(q("jabber:client", "body")) in (None, "number 2")

    bob = await login(server, "bob")
    await bob.expect_message("number 0")
    await bob.expect_message("number 1")
    await bob.expect_none(is_message, 1.0, "a message over the offline cap")


@async_test()
async def test_offline_for_unknown_user_bounces(server):
    alice = await login(server, "alice")
    alice.chat("nobody@localhost", "hello?")
    bounce = await alice.expect(lambda e: is_message(e) and e.get("type") == "error",
                                what="bounce for a nonexistent user")
    assert stanza_error(bounce) in ("service-unavailable", "item-not-found")


@async_test()
async def test_groupchat_and_error_messages_are_not_stored(server):
    alice = await login(server, "alice")
    alice.send_message(mto="bob@localhost", mbody="a groupchat line", mtype="groupchat")
    alice.send_message(mto="bob@localhost", mbody="an error", mtype="error")
    alice.send_message(mto="bob@localhost", mbody="a normal one", mtype="normal")
    await settled(alice)
    bob = await login(server, "bob")
    await bob.expect_message("a normal one")
    await bob.expect_none(is_message, 1.0, "groupchat/error message stored offline")


@async_test()
async def test_offline_messages_survive_kill_9(server):
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "written to disk?")
    # Stored durably once settled: an answer to a stored message comes after its commit.
    await settled(alice)
    alice.kill()
    server.kill9()
    server.start()
    bob = await login(server, "bob")
    message = await bob.expect_message("written to disk?", "alice@localhost")
    delay_of(message)


@async_test(timeout=150)
async def test_message_racing_initial_presence_is_not_stranded(server):
    # A message that reaches the server around the recipient's initial presence is either
    # delivered live or stored and then flushed by that presence — never left in storage
    # until some later login. Repeated because the window is narrow.
    alice = await login(server, "alice")
    stranded = []
    for i in range(15):
        bob = await login(server, "bob", presence=False, roster=False)
        bob.send_presence()
        alice.chat("bob@localhost", f"race {i}")
        try:
            await bob.expect_message(f"race {i}", timeout=3)
        except AssertionError:
            stranded.append(i)
        await bob.close()
    assert not stranded, f"messages not delivered to the session that came online: {stranded}"
