"""The HTTP layer: XMPP over WebSocket (RFC 7395) through xmpp.js (@xmpp/client, from
tests/node), host-meta (XEP-0156) read with plain HTTP requests, and the layer's limits.

A WebSocket client logs in through the same negotiation as c2s and exchanges messages with a
slixmpp client on TCP; a page of another origin and a handshake without the ``xmpp``
subprotocol are refused; a body over the limit and a client that never finishes its request
head get errors while the server goes on serving others.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from clients import async_test, login, trust_all
from conftest import PASSWORD, ROOT

NODE_DIR = ROOT / "tests" / "node"
WS_CLIENT = NODE_DIR / "ws_client.js"
XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
REL_WS = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"
STEP = 20.0


def http_config(**extra) -> dict:
    return {"enabled": True, "listen": ["127.0.0.1:0"], **extra}


class WsClient:
    """One ws_client.js process: a line-driven @xmpp/client."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, url: str, user: str, password: str = PASSWORD) -> "WsClient":
        if not (NODE_DIR / "node_modules" / "@xmpp" / "client").exists():
            if os.environ.get("XMPPD_E2E_CI"):
                pytest.fail("tests/node is not installed (cargo xtask ci installs it)")
            pytest.skip("tests/node not installed: npm ci --prefix tests/node")
        env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0", NODE_NO_WARNINGS="1")
        proc = await asyncio.create_subprocess_exec(
            "node", str(WS_CLIENT), url, "localhost", user, password,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, cwd=str(NODE_DIR), env=env)
        return cls(proc)

    async def next(self, timeout: float = STEP) -> dict:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                raise AssertionError("the WebSocket client exited")
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # a warning of node's own

    async def expect(self, key: str, timeout: float = STEP) -> dict | str:
        while True:
            event = await self.next(timeout)
            if key in event:
                return event[key]
            if "error" in event:
                raise AssertionError(f"WebSocket client failed: {event['error']}")

    def send(self, to: str, body: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"send {to} {body}\n".encode())

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await self.expect("offline")
        assert await asyncio.wait_for(self.proc.wait(), STEP) == 0

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()


async def ws_chat(server, url: str) -> None:
    """alice on WebSocket and bob on TCP exchange messages both ways."""
    bob = await login(server, "bob")
    alice = await WsClient.start(url, "alice")
    try:
        alice_jid = await alice.expect("online")
        assert alice_jid.startswith("alice@localhost/"), alice_jid
        alice.send(server.jid("bob"), "hello over websocket")
        await bob.expect_message("hello over websocket", server.jid("alice"))
        bob.chat(alice_jid, "hello over tcp")
        message = await alice.expect("message")
        assert message == {"from": f"{bob.boundjid}", "body": "hello over tcp"}, message
        await alice.close()
    finally:
        alice.kill()
        await bob.close()


@async_test()
async def test_websocket_login_and_chat_behind_a_tls_proxy(make_server):
    server = make_server(http=http_config(behind_tls_proxy=True))
    await ws_chat(server, f"ws://127.0.0.1:{server.http_port}/xmpp-websocket")


@async_test()
async def test_websocket_login_and_chat_on_the_tls_listener(make_server):
    server = make_server(http=http_config(listen=[], tls_listen=["127.0.0.1:0"]))
    await ws_chat(server, f"wss://localhost:{server.https_port}/xmpp-websocket")


@async_test()
async def test_websocket_in_the_clear_gets_no_authentication(make_server):
    # Like c2s before STARTTLS (c2s.require_starttls), and there is no STARTTLS to wait for.
    server = make_server(http=http_config())
    alice = await WsClient.start(f"ws://127.0.0.1:{server.http_port}/xmpp-websocket", "alice")
    try:
        event = await alice.next()
        assert event == {"error": "policy-violation"}, event
    finally:
        alice.kill()
    # The server still serves everyone else.
    bob = await login(server, "bob")
    await bob.close()


def handshake(port: int, headers: dict[str, str], path: str = "/xmpp-websocket"
              ) -> tuple[int, dict[str, str]]:
    """Sends a WebSocket opening handshake; returns the status and the response headers."""
    base = {
        "Host": f"127.0.0.1:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    base.update(headers)
    request = f"GET {path} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in base.items() if v is not None) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as sock:
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
    lines = head.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return status, fields


def test_websocket_handshake_needs_the_xmpp_subprotocol(make_server):
    server = make_server(users=(), http=http_config())
    status, fields = handshake(server.http_port, {"Sec-WebSocket-Protocol": "chat"})
    assert status == 400, (status, fields)
    status, fields = handshake(server.http_port, {})
    assert status == 400, (status, fields)
    status, fields = handshake(server.http_port, {"Sec-WebSocket-Protocol": "chat, xmpp"})
    assert status == 101, (status, fields)
    assert fields.get("sec-websocket-protocol") == "xmpp", fields
    # RFC 6455 §4.2.2: the key's answer.
    assert fields.get("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", fields


def test_websocket_from_another_origin_is_refused(make_server):
    server = make_server(users=(), http=http_config(
        websocket_origins=["https://chat.example.org"]))
    port = server.http_port
    xmpp = {"Sec-WebSocket-Protocol": "xmpp"}
    # Cross-site WebSocket hijacking: a page elsewhere.
    status, _ = handshake(port, {**xmpp, "Origin": "https://evil.example"})
    assert status == 403
    # A configured origin, the endpoint's own, and a client that is no browser.
    assert handshake(port, {**xmpp, "Origin": "https://chat.example.org"})[0] == 101
    assert handshake(port, {**xmpp, "Origin": f"http://127.0.0.1:{port}"})[0] == 101
    assert handshake(port, xmpp)[0] == 101


def get(url: str, **kw) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, **kw)
    try:
        with urllib.request.urlopen(request, timeout=STEP, context=trust_all()) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read()
    except (ConnectionResetError, urllib.error.URLError) as err:
        if isinstance(err, urllib.error.URLError) and not isinstance(
                err.reason, ConnectionResetError):
            raise
        return 0, {}, b""


def test_host_meta_advertises_the_websocket_endpoint(make_server):
    server = make_server(users=(), http=http_config(tls_listen=["127.0.0.1:0"]))
    base = f"http://127.0.0.1:{server.http_port}"
    status, fields, body = get(f"{base}/.well-known/host-meta")
    assert status == 200
    assert fields["access-control-allow-origin"] == "*"
    assert fields["content-type"].startswith("application/xrd+xml")
    links = ET.fromstring(body).findall(f"{XRD}Link")
    assert [(l.get("rel"), l.get("href")) for l in links] == [
        (REL_WS, f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"),
        (REL_BOSH, f"http://127.0.0.1:{server.http_port}/http-bind")]
    status, fields, body = get(f"{base}/.well-known/host-meta.json")
    assert status == 200 and fields["access-control-allow-origin"] == "*"
    assert json.loads(body) == {"links": [
        {"rel": REL_WS, "href": f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"},
        {"rel": REL_BOSH, "href": f"http://127.0.0.1:{server.http_port}/http-bind"}]}
    # On the TLS listener, with the same certificate store as c2s.
    status, _, body = get(f"https://localhost:{server.https_port}/.well-known/host-meta.json")
    assert json.loads(body)["links"][0]["href"] == (
        f"wss://localhost:{server.https_port}/xmpp-websocket")


def test_host_meta_advertises_the_configured_public_urls(make_server):
    server = make_server(users=(), http=http_config(
        websocket_url="wss://chat.example.org/ws", bosh_url="https://chat.example.org/bosh"))
    status, _, body = get(f"http://127.0.0.1:{server.http_port}/.well-known/host-meta.json")
    assert status == 200
    assert json.loads(body) == {"links": [
        {"rel": REL_WS, "href": "wss://chat.example.org/ws"},
        {"rel": REL_BOSH, "href": "https://chat.example.org/bosh"},
    ]}


def test_oversized_bodies_and_heads_are_refused_and_serving_goes_on(make_server):
    server = make_server(users=(), http=http_config(max_body_bytes=1000))
    url = f"http://127.0.0.1:{server.http_port}/.well-known/host-meta"
    status, _, _ = get(url, data=b"x" * 5000, method="POST")
    assert status == 413
    # 431, unless the server's close (with the rest of the head unread) reset the connection
    # before the client read it.
    status, _, _ = get(url, headers={"X-Padding": "y" * 20 * 1024})
    assert status in (431, 0), status
    assert get(url)[0] == 200


def test_a_slow_request_head_times_out_and_serving_goes_on(make_server):
    server = make_server(users=(), http=http_config(header_timeout_secs=1))
    port = server.http_port
    with socket.create_connection(("127.0.0.1", port), timeout=STEP) as slow:
        slow.sendall(b"GET /.well-known/host-meta HTTP/1.1\r\nHost: x\r\n")
        # Others are served while it dawdles.
        assert get(f"http://127.0.0.1:{port}/.well-known/host-meta")[0] == 200
        started = time.monotonic()
        # The server gives up on it: an answer or the close, long before our safety timeout.
        answer = b""
        while True:
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
        assert time.monotonic() - started < STEP
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer
    assert get(f"http://127.0.0.1:{port}/.well-known/host-meta")[0] == 200


def test_access_log_respects_hide_ip(make_server):
    for hide in (False, True):
        server = make_server(users=(), server={"hide_ip_in_logs": hide}, http=http_config())
        start = server.line_count()
        get(f"http://127.0.0.1:{server.http_port}/nowhere?secret=1")
        deadline = time.monotonic() + STEP
        while True:
            lines = [l for l in server.output(start).splitlines() if "/nowhere" in l]
            if lines or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert lines, server.output(start)
        assert "404" in lines[0] and "secret" not in lines[0], lines[0]
        assert ("127.0.0.1" in lines[0]) != hide, lines[0]
        server.stop()
