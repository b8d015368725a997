"""The SOCKS5 bytestreams proxy (XEP-0065) on proxy.localhost: a file between two slixmpp
clients (their xep_0065 plugin: proxy discovery, SOCKS5, activation) arrives intact at the
configured pace; activation is refused to strangers and to anyone but the initiator."""

import asyncio
import hashlib
import os
import socket

from clients import async_test, login, q, stanza_error

BYTESTREAMS = "http://jabber.org/protocol/bytestreams"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
PROXY = "proxy.localhost"

SIZE = 10 * 1024 * 1024
RATE = 4 * 1024 * 1024
# What the relay lets pass at once before pacing (its chunk).
BURST = 16 * 1024


def with_socks5(client) -> None:
    client.register_plugin("xep_0030")
    client.register_plugin("xep_0065", {"auto_accept": True})


def proxy_config(**extra) -> dict:
    return {"proxy65": {"enabled": True, "listen": "127.0.0.1:0", **extra}}


@async_test(timeout=240)
async def test_ten_mebibytes_through_the_proxy_intact_and_paced(make_server):
    server = make_server(**proxy_config(transfer_bytes_per_sec=RATE))
    alice = await login(server, "alice", setup=with_socks5)
    bob = await login(server, "bob", setup=with_socks5)

    items = await alice.iq("get", f"<query xmlns='{DISCO_ITEMS}'/>", to="localhost")
    assert PROXY in {i.get("jid") for i in items.iter(q(DISCO_ITEMS, "item"))}
    proxies = await alice.plugin["xep_0065"].discover_proxies(timeout=10)
    assert {str(j) for j in proxies} == {PROXY}, proxies
    host, port = next(iter(proxies.values()))
    assert (host, int(port)) == ("127.0.0.1", server.proxy65_port)

    received = bytearray()
    done = asyncio.Event()

    def on_data(data: bytes) -> None:
        received.extend(data)
        if len(received) >= SIZE:
            done.set()

    bob.add_event_handler("socks5_data", on_data)
    payload = os.urandom(SIZE)
    loop = asyncio.get_running_loop()
    start = loop.time()
    stream = await alice.plugin["xep_0065"].handshake(bob.boundjid.full, timeout=20)
    assert stream is not None, "no bytestream through the proxy"
    for i in range(0, SIZE, 64 * 1024):
        await stream.write(payload[i:i + 64 * 1024])
    await asyncio.wait_for(done.wait(), 180)
    elapsed = loop.time() - start
    assert len(received) == SIZE
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(payload).hexdigest()
    least = (SIZE - BURST) / RATE
    assert elapsed >= least, f"{SIZE} bytes in {elapsed:.2f}s, faster than {RATE} B/s allows"


def socks5_connect(port: int, addr: str) -> socket.socket:
    """A SOCKS5 client as XEP-0065 §5.3.2 says: no authentication, CONNECT to the hash."""
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.sendall(b"\x05\x01\x00")
    assert s.recv(2) == b"\x05\x00"
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(addr)]) + addr.encode() + b"\x00\x00")
    reply = b""
    while len(reply) < 7 + len(addr):
        chunk = s.recv(64)
        assert chunk, "the proxy closed the connection"
        reply += chunk
    assert reply[:2] == b"\x05\x00", reply
    return s


def activate(sid: str, target: str) -> str:
    return f"<query xmlns='{BYTESTREAMS}' sid='{sid}'><activate>{target}</activate></query>"


@async_test(timeout=120)
async def test_activation_only_by_the_allowed_initiator(make_server):
    server = make_server(users=("alice", "bob", "carol"),
                         **proxy_config(allow=["alice@localhost", "bob@localhost"]))
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    carol = await login(server, "carol")

    # Someone the configuration does not allow learns nothing and activates nothing.
    reply = await carol.iq("get", f"<query xmlns='{BYTESTREAMS}'/>", to=PROXY)
    assert stanza_error(reply) == "forbidden", reply
    reply = await alice.iq("get", f"<query xmlns='{BYTESTREAMS}'/>", to=PROXY)
    host = reply.find(q(BYTESTREAMS, "query")).find(q(BYTESTREAMS, "streamhost"))
    assert host.get("jid") == PROXY and int(host.get("port")) == server.proxy65_port

    sid = "s5b-test-1"
    initiator, target = alice.boundjid.full, bob.boundjid.full
    addr = hashlib.sha1((sid + initiator + target).encode()).hexdigest()
    reply = await alice.iq("set", activate(sid, target), to=PROXY)
    assert stanza_error(reply) == "item-not-found", "activation of nothing connected"

    target_sock = socks5_connect(server.proxy65_port, addr)
    reply = await alice.iq("set", activate(sid, target), to=PROXY)
    assert stanza_error(reply) == "not-allowed", "activation before the initiator connected"
    initiator_sock = socks5_connect(server.proxy65_port, addr)

    reply = await carol.iq("set", activate(sid, target), to=PROXY)
    assert stanza_error(reply) == "forbidden", reply
    # The target (allowed, but not the initiator) names a pair that is not its own.
    reply = await bob.iq("set", activate(sid, target), to=PROXY)
    assert stanza_error(reply) == "item-not-found", reply

    reply = await alice.iq("set", activate(sid, target), to=PROXY)
    assert reply.get("type") == "result", reply
    initiator_sock.sendall(b"hello through the proxy")
    got = b""
    while len(got) < 23:
        chunk = await asyncio.to_thread(target_sock.recv, 64)
        assert chunk, "the relay closed"
        got += chunk
    assert got == b"hello through the proxy"
    # Activated once: a second activation finds nothing.
    reply = await alice.iq("set", activate(sid, target), to=PROXY)
    assert stanza_error(reply) == "item-not-found", reply
    initiator_sock.close()
    target_sock.close()


@async_test()
async def test_proxy_disco_and_off_by_default(make_server):
    server = make_server(**proxy_config())
    alice = await login(server, "alice")
    info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to=PROXY)
    identities = {(i.get("category"), i.get("type")) for i in info.iter(q(DISCO_INFO, "identity"))}
    assert ("proxy", "bytestreams") in identities, identities
    assert BYTESTREAMS in {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}

    plain = make_server()
    alice = await login(plain, "alice")
    items = await alice.iq("get", f"<query xmlns='{DISCO_ITEMS}'/>", to="localhost")
    assert PROXY not in {i.get("jid") for i in items.iter(q(DISCO_ITEMS, "item"))}
