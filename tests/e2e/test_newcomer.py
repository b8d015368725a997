"""The newcomer's first day, end to end with a real client: two accounts made with the CLI
log in over STARTTLS with SCRAM, add each other, see each other's presence, chat, and the
one who logged off finds the messages sent meanwhile when coming back."""

from clients import DELAY_NS, async_test, login, q


@async_test()
async def test_newcomer_scenario(make_server):
    server = make_server(users=())
    server.register("alice", "alice's secret")
    server.register("bob", "bob's secret")

    alice = await login(server, "alice", password="alice's secret", mech="SCRAM-SHA-256")
    bob = await login(server, "bob", password="bob's secret", mech="SCRAM-SHA-256")

    alice.send_presence(pto="bob@localhost", ptype="subscribe")
    await bob.expect_presence("alice@localhost", "subscribe")
    bob.send_presence(pto="alice@localhost", ptype="subscribed")
    bob.send_presence(pto="alice@localhost", ptype="subscribe")
    await alice.expect_presence("bob@localhost", "subscribed")
    await alice.expect_presence("bob@localhost", "subscribe")
    alice.send_presence(pto="bob@localhost", ptype="subscribed")

    await alice.expect_presence(str(bob.boundjid), full=True)
    await bob.expect_presence(str(alice.boundjid), full=True)

    alice.chat("bob@localhost", "hi bob!")
    await bob.expect_message("hi bob!", "alice@localhost")
    bob.chat(str(alice.boundjid), "hi alice!")
    await alice.expect_message("hi alice!", "bob@localhost")

    await bob.close()
    await alice.expect_presence(str(bob.boundjid), "unavailable", full=True)
    alice.chat("bob@localhost", "see this tomorrow")

    bob = await login(server, "bob", password="bob's secret", mech="SCRAM-SHA-256")
    message = await bob.expect_message("see this tomorrow", "alice@localhost")
    assert message.find(q(DELAY_NS, "delay")) is not None
    await alice.expect_presence(str(bob.boundjid), full=True)
    roster = bob.client_roster
    assert "alice@localhost" in roster
    assert roster["alice@localhost"]["subscription"] == "both"
