"""XMPP over BOSH (XEP-0124, XEP-0206) on /http-bind, spoken with raw HTTP requests (aiohttp),
against slixmpp clients on TCP.

A BOSH client creates a session, authenticates with SASL PLAIN, restarts the stream, binds and
exchanges messages with a slixmpp client both ways; a repeated rid gets the same answer; a rid
outside the window, too many open requests, an unknown session and a malformed body end with
the right terminate condition; a session left idle ends after its inactivity time and what
was sent to it meanwhile is stored offline; a terminate carries its last stanzas.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import urllib.request
import xml.etree.ElementTree as ET

import aiohttp

from clients import async_test, login, trust_all
from conftest import PASSWORD

NS_BIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
STEP = 20.0


def http_config(**extra) -> dict:
    return {"enabled": True, "listen": ["127.0.0.1:0"], "behind_tls_proxy": True, **extra}


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


class Bosh:
    """A BOSH client made of raw HTTP requests."""

    def __init__(self, http: aiohttp.ClientSession, url: str, wait: int = 10) -> None:
        self.http = http
        self.url = url
        self.wait = wait
        self.rid = random.randint(1 << 20, 1 << 40)
        self.sid: str | None = None
        self.jid = ""

    def next_rid(self) -> int:
        self.rid += 1
        return self.rid

    async def post(self, body: str, headers: dict | None = None) -> str:
        headers = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        async with self.http.post(self.url, data=body.encode(), headers=headers,
                                  ssl=trust_all()) as resp:
            assert resp.status == 200, (resp.status, await resp.text())
            assert resp.headers["Content-Type"].startswith("text/xml"), resp.headers
            return await resp.text()

    def body(self, payload: str = "", rid: int | None = None, **attrs: str) -> str:
        attrs = {"rid": str(rid if rid is not None else self.next_rid()),
                 **({"sid": self.sid} if self.sid else {}), **attrs}
        text = " ".join(f"{k}='{v}'" for k, v in attrs.items())
        return (f"<body {text} xmlns='{NS_BIND}' xmlns:xmpp='{NS_XBOSH}'>{payload}</body>")

    async def send(self, payload: str = "", rid: int | None = None, **attrs: str) -> ET.Element:
        return ET.fromstring(await self.post(self.body(payload, rid, **attrs)))

    async def create(self, to: str = "localhost", hold: int = 1) -> ET.Element:
        resp = await self.send(**{"to": to, "wait": str(self.wait), "hold": str(hold),
                                  "ver": "1.6", "xml:lang": "en", "xmpp:version": "1.0",
                                  "content": "text/xml; charset=utf-8"})
        assert resp.get("type") != "terminate", ET.tostring(resp)
        self.sid = resp.get("sid")
        return resp

    async def until(self, predicate, resp: ET.Element | None = None) -> ET.Element:
        """Polls (empty requests, each held up to `wait`) until a response has an element
        that `predicate` accepts; returns that element."""
        deadline = time.monotonic() + STEP
        while True:
            if resp is not None:
                assert resp.get("type") != "terminate", ET.tostring(resp)
                for child in resp:
                    if predicate(child):
                        return child
            assert time.monotonic() < deadline, "nothing came"
            resp = await self.send()

    async def login(self, user: str, password: str = PASSWORD) -> None:
        resp = await self.create()
        features = await self.until(lambda e: e.tag == q(NS_STREAM, "features"), resp)
        mechanisms = [m.text for m in features.iter(q(NS_SASL, "mechanism"))]
        assert "PLAIN" in mechanisms, mechanisms
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        resp = await self.send(f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>")
        await self.until(lambda e: e.tag == q(NS_SASL, "success"), resp)
        # XEP-0206 §5: the restart, answered with the new stream's features.
        resp = await self.send(**{"xmpp:restart": "true", "to": "localhost", "xml:lang": "en"})
        features = await self.until(lambda e: e.tag == q(NS_STREAM, "features"), resp)
        assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
        resp = await self.send(
            f"<iq xmlns='{NS_CLIENT}' type='set' id='b1'><bind "
            "xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>web</resource></bind></iq>")
        iq = await self.until(lambda e: e.tag == q(NS_CLIENT, "iq") and e.get("id") == "b1",
                              resp)
        assert iq.get("type") == "result", ET.tostring(iq)
        self.jid = iq.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid")
        assert self.jid.startswith(f"{user}@localhost/"), self.jid


def endpoint(server) -> str:
    return f"http://127.0.0.1:{server.http_port}/http-bind"


@async_test(timeout=150)
async def test_bosh_login_chat_repeat_and_terminate(make_server):
    server = make_server(http=http_config())
    bob = await login(server, "bob")
    async with aiohttp.ClientSession() as http:
        alice = Bosh(http, endpoint(server))
        # The creation answer (XEP-0124 §7, XEP-0206 §3).
        resp = await alice.create()
        assert resp.get("sid") and resp.get("authid"), ET.tostring(resp)
        assert (resp.get("hold"), resp.get("requests")) == ("1", "2"), resp.attrib
        assert resp.get("wait") == "10" and resp.get("from") == "localhost", resp.attrib
        assert resp.get(q(NS_XBOSH, "restartlogic")) == "true", resp.attrib
        assert resp.get(q(NS_XBOSH, "version")) == "1.0", resp.attrib
        assert int(resp.get("inactivity")) > 0 and resp.get("polling"), resp.attrib
        resp = await alice.send(type="terminate")
        assert (resp.get("type"), resp.get("condition")) == ("terminate", None), resp.attrib

        alice = Bosh(http, endpoint(server))
        await alice.login("alice")
        await alice.send("<presence xmlns='jabber:client'/>")
        resp = await alice.send(
            f"<message xmlns='{NS_CLIENT}' to='{server.jid('bob')}' type='chat'>"
            "<body>hello over bosh</body></message>")
        await bob.expect_message("hello over bosh", server.jid("alice"))
        bob.chat(alice.jid, "hello over tcp")
        message = await alice.until(lambda e: e.tag == q(NS_CLIENT, "message"), resp)
        assert message.findtext(q(NS_CLIENT, "body")) == "hello over tcp"
        assert message.get("from") == str(bob.boundjid), message.attrib

        # §14.3: a repeated rid gets the very answer it got.
        rid = alice.next_rid()
        first = await alice.post(alice.body(
            f"<iq xmlns='{NS_CLIENT}' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            rid=rid))
        again = await alice.post(alice.body(
            f"<iq xmlns='{NS_CLIENT}' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>",
            rid=rid))
        assert again == first, (first, again)

        # XEP-0124 §12: what the terminate carries is handled before the stream ends.
        resp = await alice.send(
            f"<message xmlns='{NS_CLIENT}' to='{server.jid('bob')}' type='chat'>"
            "<body>bye</body></message><presence xmlns='jabber:client' type='unavailable'/>",
            type="terminate")
        assert (resp.get("type"), resp.get("condition")) == ("terminate", None), resp.attrib
        await bob.expect_message("bye", server.jid("alice"))
        # The session is gone.
        resp = await alice.send()
        assert (resp.get("type"), resp.get("condition")) == ("terminate", "item-not-found")
    await bob.close()


@async_test(timeout=150)
async def test_bosh_login_on_the_tls_listener(make_server):
    server = make_server(http={"enabled": True, "listen": [], "tls_listen": ["127.0.0.1:0"]})
    bob = await login(server, "bob")
    async with aiohttp.ClientSession() as http:
        alice = Bosh(http, f"https://localhost:{server.https_port}/http-bind")
        await alice.login("alice")
        await alice.send("<presence xmlns='jabber:client'/>")
        await alice.send(f"<message xmlns='{NS_CLIENT}' to='{server.jid('bob')}'>"
                         "<body>over https</body></message>")
        await bob.expect_message("over https", server.jid("alice"))
        resp = await alice.send(type="terminate")
        assert resp.get("type") == "terminate", resp.attrib
    await bob.close()


@async_test(timeout=150)
async def test_bosh_in_the_clear_gets_no_authentication(make_server):
    # As on WebSocket: without TLS (ours or a proxy's) the stream ends with a stream error.
    server = make_server(http={"enabled": True, "listen": ["127.0.0.1:0"]})
    async with aiohttp.ClientSession() as http:
        alice = Bosh(http, endpoint(server))
        resp = await alice.send(**{"to": "localhost", "wait": "10", "hold": "1",
                                   "xmpp:version": "1.0"})
        assert resp.get("type") == "terminate", ET.tostring(resp)
        assert resp.get("condition") == "remote-stream-error", ET.tostring(resp)
        error = resp.find(q(NS_STREAM, "error"))
        assert error is not None, ET.tostring(resp)
        assert error.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None


@async_test(timeout=150)
async def test_bosh_rid_window_and_binding_errors(make_server):
    server = make_server(users=(), http=http_config())
    async with aiohttp.ClientSession() as http:
        # Not a <body/>, or a session that does not exist.
        client = Bosh(http, endpoint(server))
        resp = ET.fromstring(await client.post("<iq xmlns='jabber:client'/>"))
        assert (resp.get("type"), resp.get("condition")) == ("terminate", "bad-request")
        client.sid = "0123456789abcdef"
        resp = await client.send()
        assert resp.get("condition") == "item-not-found", resp.attrib

        # §14.1: a rid beyond the window ends the session.
        client = Bosh(http, endpoint(server))
        await client.create()
        resp = await client.send(rid=client.rid + 10)
        assert (resp.get("type"), resp.get("condition")) == ("terminate", "item-not-found")
        resp = await client.send()
        assert resp.get("condition") == "item-not-found", resp.attrib

        # §11: more requests open than `requests` (2) is a policy violation. Two requests
        # ahead of a missing one stay open; each is sent twice, and the first of a pair is
        # answered (empty) once its repetition took its place, so both have arrived.
        client = Bosh(http, endpoint(server))
        await client.create()
        base = client.rid
        for rid in (base + 2, base + 3):
            pair = [asyncio.create_task(client.send(rid=rid)) for _ in range(2)]
            done, _ = await asyncio.wait(pair, timeout=STEP,
                                         return_when=asyncio.FIRST_COMPLETED)
            assert done, "a repeated request ahead of a gap was not answered"
            assert [t.result().get("type") for t in done] == [None], done
            waiting = (set(pair) - done).pop()
            if rid == base + 2:
                ahead2 = waiting
            else:
                ahead3 = waiting
        resp = await client.send(rid=base + 1)
        assert (resp.get("type"), resp.get("condition")) == ("terminate", "policy-violation")
        for task in (ahead2, ahead3):
            resp = await asyncio.wait_for(task, STEP)
            assert resp.get("condition") == "policy-violation", resp.attrib

        # CORS: the preflight of a page of an allowed origin, and a page of another.
        async with http.options(endpoint(server), headers={
                "Origin": "https://web.example.org",
                "Access-Control-Request-Method": "POST"}) as resp:
            assert resp.status == 403, resp.status
    server = make_server(users=(), http=http_config(bosh_origins=["https://web.example.org"]))
    async with aiohttp.ClientSession() as http:
        async with http.options(endpoint(server), headers={
                "Origin": "https://web.example.org",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type"}) as resp:
            assert resp.status == 204, resp.status
            assert resp.headers["Access-Control-Allow-Origin"] == "https://web.example.org"
            assert "POST" in resp.headers["Access-Control-Allow-Methods"]
            assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
        client = Bosh(http, endpoint(server))
        text = await client.post(client.body(**{"to": "localhost", "wait": "5", "hold": "1"}),
                                 headers={"Origin": "https://web.example.org"})
        assert ET.fromstring(text).get("sid"), text
        async with http.post(endpoint(server), data=client.body(to="localhost"),
                             headers={"Origin": "https://evil.example"}) as resp:
            assert resp.status == 403, resp.status


@async_test(timeout=150)
async def test_bosh_inactivity_ends_the_session_and_loses_nothing(make_server):
    server = make_server(http=http_config(bosh_inactivity_secs=3))
    bob = await login(server, "bob")
    async with aiohttp.ClientSession() as http:
        alice = Bosh(http, endpoint(server))
        await alice.login("alice")
        resp = await alice.send("<presence xmlns='jabber:client'/>")
        await alice.until(lambda e: e.tag == q(NS_CLIENT, "presence"), resp)
        # Alice stops asking. What bob sends her now waits in her session's queue: no
        # request is open to take it.
        bob.chat(server.jid("alice"), "while you were away")
        await server.wait_for_log("BOSH session inactive", since_line=server.started_at_line)
        resp = await alice.send()
        assert (resp.get("type"), resp.get("condition")) == ("terminate", "item-not-found")
    # Her session ended like a lost connection: the message went to offline storage.
    alice2 = await login(server, "alice")
    await alice2.expect_message("while you were away", server.jid("bob"))
    await alice2.close()
    await bob.close()


def test_host_meta_advertises_bosh(make_server):
    server = make_server(users=(), http=http_config())
    base = f"http://127.0.0.1:{server.http_port}/.well-known/host-meta"
    with urllib.request.urlopen(base, timeout=STEP) as resp:
        xrd = ET.fromstring(resp.read())
    links = {link.get("rel"): link.get("href")
             for link in xrd.iter("{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link")}
    # Behind a TLS proxy the client's scheme is https.
    assert links["urn:xmpp:alt-connections:xbosh"] == \
        f"https://127.0.0.1:{server.http_port}/http-bind", links
    server = make_server(users=(), http=http_config(
        bosh_url="https://chat.example.org/bosh"))
    url = f"http://127.0.0.1:{server.http_port}/.well-known/host-meta.json"
    with urllib.request.urlopen(url, timeout=STEP) as resp:
        links = {link["rel"]: link["href"] for link in json.loads(resp.read())["links"]}
    assert links["urn:xmpp:alt-connections:xbosh"] == "https://chat.example.org/bosh", links


def sessions_by_transport(server) -> dict[str, float]:
    """The `xmppd_sessions` gauge of /metrics on the administration listener, per transport."""
    url = f"http://127.0.0.1:{server.admin_http_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    prefix = 'xmppd_sessions{transport="'
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in text.splitlines() if line.startswith(prefix)}


@async_test(timeout=150)
async def test_a_bosh_session_is_counted_as_bosh(make_server):
    server = make_server(http=http_config(),
                         admin_http={"enabled": True, "listen": ["127.0.0.1:0"]})
    async with aiohttp.ClientSession() as http:
        alice = Bosh(http, endpoint(server))
        await alice.login("alice")
        counted = await asyncio.to_thread(sessions_by_transport, server)
        assert (counted.get("bosh"), counted.get("websocket")) == (1, 0), counted
        resp = await alice.send(type="terminate")
        assert resp.get("type") == "terminate", resp.attrib
    # The gauge drops once the stream has ended (the terminate answer may come first).
    deadline = time.monotonic() + STEP
    while (counted := await asyncio.to_thread(sessions_by_transport, server)).get("bosh"):
        assert time.monotonic() < deadline, counted
        await asyncio.sleep(0.05)
