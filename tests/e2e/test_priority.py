"""Presence priority (RFC 6121 §8.5.2.1): a message to the bare JID goes to the available
resource(s) with the highest non-negative priority — all of them on a tie — and never to a
resource with negative priority; with only negative priorities it is stored offline."""

from clients import DELAY_NS, async_test, is_message, login, q, settled

MESSAGE_WAIT = 1.5


@async_test()
async def test_highest_priority_resources_get_bare_jid_messages(server):
    high1 = await login(server, "bob", priority=5)
    high2 = await login(server, "bob", priority=5)
    low = await login(server, "bob", priority=1)
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "to the best of bob")
    await high1.expect_message("to the best of bob", "alice@localhost")
    await high2.expect_message("to the best of bob", "alice@localhost")
    await low.expect_none(is_message, MESSAGE_WAIT, "message to a lower-priority resource")

    # Raising the low one's priority above the others moves the traffic there.
    low.send_presence(ppriority=10)
    await settled(low)
    alice.chat("bob@localhost", "now to the new favourite")
    await low.expect_message("now to the new favourite", "alice@localhost")
    await high1.expect_none(is_message, MESSAGE_WAIT, "message to a demoted resource")
    await high2.expect_none(is_message, 0.1, "message to a demoted resource")


@async_test()
async def test_negative_priority_gets_no_bare_jid_messages(server):
    shy = await login(server, "bob", priority=-1)
    normal = await login(server, "bob", priority=0)
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "to whom it may concern")
    await normal.expect_message("to whom it may concern", "alice@localhost")
    await shy.expect_none(is_message, MESSAGE_WAIT, "message to a negative-priority resource")
    # Addressed to its full JID it still gets it.
    alice.chat(str(shy.boundjid), "just for you")
    await shy.expect_message("just for you", "alice@localhost")


@async_test()
async def test_only_negative_priority_means_offline(server):
    shy = await login(server, "bob", priority=-5)
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "kept for later")
    # Stored before the next resource comes (else it would get it live, without a delay).
    await settled(alice)
    await shy.expect_none(is_message, MESSAGE_WAIT, "message to a negative-priority resource")
    # The next resource with non-negative priority receives it from offline storage.
    later = await login(server, "bob", priority=0)
    message = await later.expect_message("kept for later", "alice@localhost")
    assert message.find(q(DELAY_NS, "delay")) is not None, "offline message without <delay/>"


@async_test()
async def test_default_priority_is_zero_and_ties_share(server):
    a = await login(server, "bob")
    b = await login(server, "bob", priority=0)
    alice = await login(server, "alice")
    alice.chat("bob@localhost", "for both")
    await a.expect_message("for both", "alice@localhost")
    await b.expect_message("for both", "alice@localhost")
