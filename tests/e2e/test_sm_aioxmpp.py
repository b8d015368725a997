"""Stream management (XEP-0198) through a second client library, aioxmpp, whose stream
enables it, notices a broken connection, reconnects and resumes on its own: its connection is
cut (closed without a closing tag, or left half-open with the client no longer reading) while
another client sends it messages; every message arrives exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from datetime import timedelta

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher

from clients import async_test, login, settled
from conftest import PASSWORD
from test_sm import SAFETY, logged, until


@contextlib.asynccontextmanager
async def resuming_client(server, user: str):
    """An aioxmpp client of ``user`` that is online and has stream management enabled; its
    ``received`` lists the bodies of the chat messages it got, ``resumed`` is set when it
    resumed its stream."""
    client = aioxmpp.Client(
        aioxmpp.JID.fromstr(server.jid(user) + "/aio"),
        aioxmpp.make_security_layer(PASSWORD, no_verify=True),
        override_peer=[("127.0.0.1", server.starttls_port,
                        aioxmpp.connector.STARTTLSConnector())],
    )
    client.backoff_start = timedelta(seconds=0.2)
    client.received = []
    client.resumed = asyncio.Event()
    client.on_stream_resumed.connect(lambda: client.resumed.set())
    async with client.connected(presence=aioxmpp.PresenceState(True)):
        # The test decides when the connection is dead, not aioxmpp's own timers (only the
        # half-open test lets them find it).
        client.stream.soft_timeout = timedelta(hours=1)
        client.stream.round_trip_time = timedelta(hours=1)
        dispatcher = client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
        dispatcher.register_callback(aioxmpp.MessageType.CHAT, None,
                                     lambda msg: client.received.append(msg.body.any()))
        await until(lambda: client.stream.sm_enabled and client.stream.sm_resumable,
                    "stream management enabled")
        yield client


@contextlib.asynccontextmanager
async def answering(client):
    """While the body runs, ``client`` keeps talking to the server (a ping round trip every
    second), so that the server's liveness check, short in these tests, finds it there however
    long the wait for the other client takes on a loaded machine."""
    async def talk():
        while True:
            await settled(client)
            await asyncio.sleep(1)
    task = asyncio.create_task(talk())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def transport(client):
    return client.stream._xmlstream._transport


def stop_reading(client) -> None:
    """The client takes nothing more from its socket (its TLS transport cannot pause)."""
    sock = transport(client).get_extra_info("socket")
    asyncio.get_running_loop().remove_reader(sock.fileno())


def cut(client) -> None:
    """Ends the TCP connection under the client's stream, without a closing tag: to the
    client as to the server, the network failed."""
    transport(client).get_extra_info("socket").shutdown(socket.SHUT_RDWR)


@async_test(timeout=180.0)
async def test_aioxmpp_resumes_after_its_connection_was_cut(make_server):
    server = make_server(c2s={"resume_timeout_secs": 600})
    alice = await login(server, "alice")
    async with resuming_client(server, "bob") as bob:
        to = server.jid("bob") + "/aio"
        for i in range(3):
            alice.chat(to, f"before {i}")
        await until(lambda: len(bob.received) == 3, "the first messages")

        since = server.line_count()
        cut(bob)
        for i in range(3):
            alice.chat(to, f"meanwhile {i}")
        await settled(alice)
        await asyncio.wait_for(bob.resumed.wait(), SAFETY)
        await logged(server, "session resumed", since)
        alice.chat(to, "last")
        await until(lambda: "last" in bob.received, "the last message")
        want = [f"before {i}" for i in range(3)] + [f"meanwhile {i}" for i in range(3)]
        assert bob.received == want + ["last"], bob.received


@async_test(timeout=180.0)
async def test_aioxmpp_resumes_after_the_server_found_its_connection_half_open(make_server):
    server = make_server(c2s={"resume_timeout_secs": 600, "ping_interval_secs": 2,
                              "ping_timeout_secs": 10})
    alice = await login(server, "alice")
    async with resuming_client(server, "bob") as bob:
        to = server.jid("bob") + "/aio"
        alice.chat(to, "before")
        await until(lambda: bob.received == ["before"], "the first message")

        since = server.line_count()
        stop_reading(bob)
        for i in range(4):
            alice.chat(to, f"unread {i}")
        await settled(alice)
        async with answering(alice):
            await logged(server, "no answer to the liveness check", since)
            await logged(server, "session detached from its connection", since)
        alice.chat(to, "while parked")
        await settled(alice)

        # The client notices now (aioxmpp's own check: nothing came for a while) and resumes on
        # a new connection.
        bob.stream.round_trip_time = timedelta(seconds=0.5)
        bob.stream.soft_timeout = timedelta(seconds=0.5)
        async with answering(alice):
            await asyncio.wait_for(bob.resumed.wait(), SAFETY)
        alice.chat(to, "last")
        await until(lambda: "last" in bob.received, "the last message")
        want = ["before"] + [f"unread {i}" for i in range(4)] + ["while parked", "last"]
        assert bob.received == want, bob.received
