"""Deployments behind a proxy or load balancer: the PROXY protocol on the c2s and HTTP
listeners, and X-Forwarded-For / Forwarded from trusted HTTP proxies.

slixmpp cannot send a PROXY header, so a tiny TCP relay in the test plays the load balancer:
it sends the header naming a client at 203.0.113.7, then pipes the client's bytes both ways.
Through it a slixmpp client logs in over STARTTLS and direct TLS, and an xmpp.js client over
WebSocket; the session list of the REST API and the server's log name the claimed client, the
per-address cap counts it, and a relay that is not a configured proxy gets no say.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import types
import urllib.error
import urllib.request

import aiohttp

from clients import LoginFailed, async_test, login
from test_api import ADMIN_HTTP, api, token
from test_bosh import NS_SASL, Bosh
from test_websocket import WsClient

CLIENT = "203.0.113.7"
STEP = 20.0
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_v2(client: str, port: int = 50123) -> bytes:
    """A PROXY protocol version 2 header: TCP over IPv4 from `client`."""
    addresses = socket.inet_aton(client) + socket.inet_aton("127.0.0.1")
    body = addresses + struct.pack(">HH", port, 5222)
    return V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack(">H", len(body)) + body


def proxy_v1(client: str, port: int = 50123) -> bytes:
    return f"PROXY TCP4 {client} 127.0.0.1 {port} 5223\r\n".encode()


class Relay:
    """A load balancer passing TCP through: the header, then the client's bytes both ways."""

    def __init__(self, target_port: int, header: bytes) -> None:
        self.target_port = target_port
        self.header = header
        self.port = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> "Relay":
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        assert self.server is not None
        self.server.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        up_writer.write(self.header)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                dst.write_eof()
            except (ConnectionError, OSError, RuntimeError):
                dst.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()
            writer.close()

    def as_server(self, server) -> types.SimpleNamespace:
        """What `login` needs of a server, with the relay's port for both kinds of TLS."""
        return types.SimpleNamespace(domain=server.domain, starttls_port=self.port,
                                     direct_tls_port=self.port)


async def session_ips(server) -> dict[str, str | None]:
    listed = await api(server, "GET", "/api/sessions", token=token(server, "read"))
    assert listed.status == 200, listed
    return {s["jid"].split("/")[0]: s["ip"] for s in listed.json["sessions"]}


@async_test(timeout=150)
async def test_a_proxy_header_names_the_client_on_both_c2s_listeners(make_server):
    server = make_server(c2s={"proxy_protocol_from": ["127.0.0.0/8"]}, **ADMIN_HTTP)
    async with Relay(server.starttls_port, proxy_v2(CLIENT)) as plain, \
            Relay(server.direct_tls_port, proxy_v1("203.0.113.8")) as direct:
        alice = await login(plain.as_server(server), "alice")
        # Direct TLS passed through: the TLS is the server's own, end to end.
        bob = await login(direct.as_server(server), "bob", direct_tls=True)
        alice.chat(server.jid("bob"), "through the balancer")
        await bob.expect_message("through the balancer", server.jid("alice"))
        ips = await session_ips(server)
        assert ips == {"alice@localhost": CLIENT, "bob@localhost": "203.0.113.8"}, ips
        await server.wait_for_log(f"peer={CLIENT}:50123")
        await alice.close()
        await bob.close()


@async_test(timeout=150)
async def test_a_proxied_client_is_hidden_like_any_other(make_server):
    server = make_server(server={"hide_ip_in_logs": True},
                         c2s={"proxy_protocol_from": ["127.0.0.1"]}, **ADMIN_HTTP)
    async with Relay(server.starttls_port, proxy_v2(CLIENT)) as relay:
        alice = await login(relay.as_server(server), "alice")
        assert await session_ips(server) == {"alice@localhost": None}
        await alice.close()
    assert CLIENT not in server.output()


def open_stream(port: int, header: bytes) -> socket.socket:
    """A raw connection that sends `header` and a stream header."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
    sock.sendall(header + b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                 b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' "
                 b"version='1.0'>")
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or, for a stream it keeps open, until
    its features are complete)."""
    got = b""
    while b"</stream:features>" not in got:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += chunk
    return got


@async_test(timeout=150)
async def test_the_pending_cap_counts_the_claimed_address(make_server):
    server = make_server(c2s={"proxy_protocol_from": ["127.0.0.1"], "max_pending_per_ip": 1})
    first = open_stream(server.starttls_port, proxy_v2(CLIENT))
    assert b"<stream:features" in await asyncio.to_thread(read_all, first)
    # The same claimed client, while its first connection is pending: over its cap.
    again = open_stream(server.starttls_port, proxy_v2(CLIENT, 50124))
    assert await asyncio.to_thread(read_all, again) == b""
    again.close()
    # Other clients of the same proxy are not: the proxy's address is not what counts.
    other = open_stream(server.starttls_port, proxy_v2("203.0.113.8"))
    assert b"<stream:features" in await asyncio.to_thread(read_all, other)
    async with Relay(server.starttls_port, proxy_v2("203.0.113.9")) as relay:
        carol = await login(relay.as_server(server), "carol")
        await carol.close()
    first.close()
    other.close()


@async_test(timeout=150)
async def test_a_header_from_an_unlisted_address_is_not_honoured(make_server):
    server = make_server(c2s={"proxy_protocol_from": ["10.0.0.5"]}, **ADMIN_HTTP)
    # Not a configured proxy: its header is the start of an XML stream, and not one.
    sock = open_stream(server.starttls_port, proxy_v2(CLIENT))
    answer = await asyncio.to_thread(read_all, sock)
    sock.close()
    assert b"<stream:error>" in answer and b"<stream:features" not in answer, answer
    async with Relay(server.starttls_port, proxy_v2(CLIENT)) as relay:
        try:
            alice = await login(relay.as_server(server), "alice", timeout=STEP)
        except (LoginFailed, AssertionError):
            alice = None
        assert alice is None, "a client behind an unlisted relay logged in"
    # Clients that connect directly are served, under their own address.
    bob = await login(server, "bob")
    assert await session_ips(server) == {"bob@localhost": "127.0.0.1"}
    await bob.close()


def get(port: int, headers: dict[str, str]) -> int:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/.well-known/host-meta",
                                 headers=headers)
    with urllib.request.urlopen(req, timeout=STEP) as resp:
        return resp.status


FORWARDED = {"X-Forwarded-For": f"198.51.100.1, {CLIENT}"}


@async_test(timeout=150)
async def test_the_access_log_takes_forwarded_for_only_from_trusted_proxies(make_server):
    trusted = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"],
                                "trusted_proxies": ["127.0.0.1"]})
    assert await asyncio.to_thread(get, trusted.http_port, FORWARDED) == 200
    # The rightmost address the trusted proxy did not add itself.
    await trusted.wait_for_log(f"peer={CLIENT}:0")
    assert "peer=198.51.100.1" not in trusted.output()

    elsewhere = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"],
                                  "trusted_proxies": ["10.0.0.5"]})
    assert await asyncio.to_thread(get, elsewhere.http_port, FORWARDED) == 200
    await elsewhere.wait_for_log("peer=127.0.0.1:")
    assert CLIENT not in elsewhere.output()

    # RFC 7239 when configured; X-Forwarded-For is then the client's own word.
    rfc = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"],
                            "trusted_proxies": ["127.0.0.1"], "forwarded_header": "forwarded"})
    headers = {"Forwarded": 'for="203.0.113.8:4711";proto=https', **FORWARDED}
    assert await asyncio.to_thread(get, rfc.http_port, headers) == 200
    await rfc.wait_for_log("peer=203.0.113.8:4711")
    assert CLIENT not in rfc.output()


class ForwardedBosh(Bosh):
    """A BOSH client behind a proxy that appends it to X-Forwarded-For."""

    async def post(self, body: str, headers: dict | None = None) -> str:
        return await super().post(body, {**FORWARDED, **(headers or {})})


@async_test(timeout=150)
async def test_a_bosh_session_through_a_trusted_proxy_is_the_clients(make_server):
    server = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"],
                               "behind_tls_proxy": True, "trusted_proxies": ["127.0.0.1"]},
                         **ADMIN_HTTP)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{server.http_port}/http-bind"
        # TLS ends at the proxy: secure, but nothing to bind a -PLUS mechanism to.
        probe = ForwardedBosh(http, url)
        resp = await probe.create()
        features = await probe.until(lambda e: e.tag.endswith("}features"), resp)
        mechanisms = [m.text for m in features.iter(f"{{{NS_SASL}}}mechanism")]
        assert "PLAIN" in mechanisms and not any(m.endswith("-PLUS") for m in mechanisms)
        await probe.send(type="terminate")
        alice = ForwardedBosh(http, url)
        await alice.login("alice")
        assert await session_ips(server) == {"alice@localhost": CLIENT}
        await server.wait_for_log(f"peer={CLIENT}:0")
        await alice.send(type="terminate")


@async_test(timeout=150)
async def test_a_websocket_login_through_a_proxy_header_on_the_http_listener(make_server):
    server = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"],
                               "behind_tls_proxy": True, "proxy_protocol_from": ["127.0.0.1"]},
                         **ADMIN_HTTP)
    async with Relay(server.http_port, proxy_v2(CLIENT)) as relay:
        alice = await WsClient.start(f"ws://127.0.0.1:{relay.port}/xmpp-websocket", "alice")
        try:
            jid = await alice.expect("online")
            assert jid.startswith("alice@localhost/"), jid
            assert await session_ips(server) == {"alice@localhost": CLIENT}
            # The upgrade request's access log line names the client too.
            await server.wait_for_log(f"peer={CLIENT}:50123")
            await alice.close()
        finally:
            alice.kill()
    # Straight to the listener, a configured proxy without a header is refused.
    assert await asyncio.to_thread(refused_without_header, server.http_port)


def refused_without_header(port: int) -> bool:
    try:
        get(port, {})
    except (OSError, urllib.error.URLError):
        return True
    return False
