"""slixmpp-based clients for the end-to-end tests.

Every stanza a client receives (messages, presence, iq pushes) is also recorded in a list so
tests can ``await client.expect(predicate)`` in any order, with a deadline, instead of
racing callbacks. slixmpp's automatic subscription handling is switched off: the tests decide
every subscription answer themselves.

Tests are plain functions decorated with ``@async_test``; each runs its scenario in a fresh
event loop under an overall timeout and aborts every client it created, so a server that stops
answering fails one test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXMLMask, MatchXPath

from conftest import PASSWORD
from raw import stanza_error_condition

CLIENT_NS = "jabber:client"
ROSTER_NS = "jabber:iq:roster"
DELAY_NS = "urn:xmpp:delay"
STEP = 10.0  # seconds any single expected event may take before the test fails

_live: list["Client"] = []


def async_test(timeout: float = 90.0):
    """Runs an ``async def`` test in its own event loop, bounded by ``timeout`` seconds."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def main():
                try:
                    return await asyncio.wait_for(fn(*args, **kwargs), timeout)
                finally:
                    for client in list(_live):
                        client.kill()
                    _live.clear()

            return asyncio.run(main())

        return wrapper

    return decorate


def trust_all() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def bare(jid: str | None) -> str:
    return (jid or "").split("/", 1)[0]


class LoginFailed(Exception):
    pass


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives."""

    def __init__(self, jid: str, password: str, *, mech: str | None = None) -> None:
        super().__init__(jid, password, sasl_mech=mech)
        self.ssl_context = trust_all()
        self.auto_authorize = None
        self.auto_subscribe = False
        self.whitespace_keepalive = False
        self.received: list[ET.Element] = []
        self._arrived = asyncio.Event()
        self.stream_errors: list[str] = []
        for name in ("message", "presence"):
            self.register_handler(Callback(
                f"record {name}", MatchXPath(q(CLIENT_NS, name)), self._record))
        # Only sets (roster pushes): a get no plugin handles is answered by slixmpp with an
        # error, which a handler matching every IQ would prevent. The server's liveness check
        # (XEP-0199 ping) is such a get; a client that leaves it unanswered is dropped as dead
        # after ping_interval_secs + ping_timeout_secs of quiet.
        self.register_handler(Callback(
            "record iq set", MatchXMLMask(f"<iq xmlns='{CLIENT_NS}' type='set'/>"),
            self._record))
        self.add_event_handler("stream_error", self._on_stream_error)
        _live.append(self)

    def _record(self, stanza) -> None:
        self.received.append(stanza.xml)
        self._arrived.set()

    def _on_stream_error(self, error) -> None:
        self.stream_errors.append(error["condition"])
        self._arrived.set()

    # --- waiting -------------------------------------------------------------------------

    async def expect(self, predicate, timeout: float = STEP, what: str = "stanza") -> ET.Element:
        """Removes and returns the first recorded stanza matching ``predicate``, waiting for
        it up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for i, elem in enumerate(self.received):
                if predicate(elem):
                    return self.received.pop(i)
            remaining = deadline - loop.time()
            if remaining <= 0:
                seen = "\n  ".join(ET.tostring(e, "unicode") for e in self.received[-10:])
                raise AssertionError(
                    f"{self.boundjid}: no {what} within {timeout}s; recent stanzas:\n  {seen}")
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def expect_none(self, predicate, within: float = 1.5, what: str = "stanza") -> None:
        """Asserts that no stanza matching ``predicate`` arrives within ``within`` seconds."""
        await asyncio.sleep(within)
        hits = [e for e in self.received if predicate(e)]
        assert not hits, f"{self.boundjid}: unexpected {what}: " + ", ".join(
            ET.tostring(e, "unicode") for e in hits)

    async def expect_message(self, body: str, sender: str | None = None, **kw) -> ET.Element:
        return await self.expect(
            lambda e: e.tag == q(CLIENT_NS, "message") and e.findtext(q(CLIENT_NS, "body")) == body
            and (sender is None or bare(e.get("from")) == bare(sender)),
            what=f"message {body!r}", **kw)

    async def expect_presence(self, sender: str, ptype: str | None = None, *, full=False,
                              **kw) -> ET.Element:
        """Presence from ``sender`` (compared bare unless ``full``) of ``ptype`` (None means
        available)."""
        def match(e: ET.Element) -> bool:
            frm = e.get("from") or ""
            return (e.tag == q(CLIENT_NS, "presence") and e.get("type") == ptype
                    and (frm == sender if full else bare(frm) == bare(sender)))
        return await self.expect(match, what=f"presence type={ptype} from {sender}", **kw)

    async def expect_roster_push(self, contact: str, **kw) -> ET.Element:
        """The ``<item/>`` of the next roster push about ``contact``."""
        def match(e: ET.Element) -> bool:
            item = e.find(f"{q(ROSTER_NS, 'query')}/{q(ROSTER_NS, 'item')}")
            return e.tag == q(CLIENT_NS, "iq") and item is not None and item.get("jid") == contact
        push = await self.expect(match, what=f"roster push for {contact}", **kw)
        # RFC 6121 §2.1.6: a push comes from the account's bare JID or carries no 'from'.
        assert push.get("from") in (None, bare(str(self.boundjid))), ET.tostring(push)
        return push.find(f"{q(ROSTER_NS, 'query')}/{q(ROSTER_NS, 'item')}")

    # --- sending -------------------------------------------------------------------------

    async def iq(self, kind: str, payload: str | None, to: str | None = None,
                 timeout: float = STEP) -> ET.Element:
        """Sends an iq with a raw XML payload; returns the reply (result or error) as XML."""
        iq = self.Iq()
        iq["type"] = kind
        if to:
            iq["to"] = to
        if payload:
            iq.xml.append(ET.fromstring(payload))
        try:
            reply = await iq.send(timeout=timeout)
        except IqError as err:
            return err.iq.xml
        except IqTimeout:
            raise AssertionError(f"no reply to iq {payload!r} to {to}") from None
        return reply.xml

    def send_raw_presence(self, to: str | None = None, ptype: str | None = None,
                          priority: int | None = None) -> None:
        self.send_presence(pto=to, ptype=ptype, ppriority=priority)

    def chat(self, to: str, body: str, mtype: str = "chat") -> None:
        self.send_message(mto=to, mbody=body, mtype=mtype)

    async def close(self) -> None:
        """A clean disconnect: ``</stream:stream>`` and wait for the connection to end."""
        if self.transport is None:
            return
        try:
            await asyncio.wait_for(self.disconnect(wait=2.0), STEP)
        finally:
            if self in _live:
                _live.remove(self)

    def kill(self) -> None:
        """Drops the TCP connection without closing the stream."""
        try:
            self.cancel_connection_attempt()
            self.abort()
        except Exception:  # noqa: BLE001 - best effort cleanup of a possibly dead client
            pass


async def login(
    server,
    user: str,
    *,
    password: str = PASSWORD,
    domain: str | None = None,
    resource: str | None = None,
    direct_tls: bool = False,
    mech: str | None = None,
    roster: bool = True,
    presence: bool = True,
    priority: int | None = None,
    timeout: float = 20.0,
    setup=None,
) -> Client:
    """Connects and authenticates a slixmpp client. STARTTLS unless ``direct_tls``.

    With ``roster`` it fetches the roster (which makes it an "interested resource" for roster
    pushes), with ``presence`` it sends initial presence. Raises LoginFailed on SASL failure.
    ``setup(client)`` runs before connecting (plugins, event handlers).
    """
    jid = f"{user}@{domain or server.domain}" + (f"/{resource}" if resource else "")
    client = Client(jid, password, mech=mech)
    client.enable_direct_tls = direct_tls
    client.enable_starttls = not direct_tls
    client.enable_plaintext = False
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future = loop.create_future()

    def settle(value) -> None:
        if not outcome.done():
            outcome.set_result(value)

    client.add_event_handler("session_start", lambda _e: settle("ok"))
    client.add_event_handler("failed_auth", lambda _e: settle("failed_auth"))
    client.add_event_handler("failed_all_auth", lambda _e: settle("failed_auth"))
    client.add_event_handler("disconnected", lambda _e: settle("disconnected"))
    if setup is not None:
        setup(client)
    port = server.direct_tls_port if direct_tls else server.starttls_port
    client.connect("127.0.0.1", port)
    try:
        result = await asyncio.wait_for(outcome, timeout)
    except asyncio.TimeoutError:
        client.kill()
        raise AssertionError(f"{jid}: login did not complete within {timeout}s") from None
    if result != "ok":
        client.kill()
        raise LoginFailed(f"{jid}: {result}")
    if roster:
        await asyncio.wait_for(client.get_roster(), STEP)
    if presence:
        client.send_presence(ppriority=priority)
        # Once settled the resource is available: tests that send to it right away then test
        # routing, not a race with the login.
        await settled(client)
    return client


async def settled(client) -> None:
    """Returns once the server has handled everything ``client`` sent so far (messages
    routed or stored, presence applied): it handles one stream's stanzas in order, so the
    answer to a ping comes after theirs."""
    pong = await client.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=client.boundjid.domain)
    assert pong.get("type") == "result", ET.tostring(pong)


async def can_login(server, user: str, password: str = PASSWORD, **kw) -> bool:
    try:
        client = await login(server, user, password=password, presence=False, roster=False, **kw)
    except LoginFailed:
        return False
    await client.close()
    return True


async def assert_chat_works(server, sender: str = "alice", receiver: str = "bob") -> None:
    """Two fresh clients log in and exchange a message: the server is still healthy."""
    a = await login(server, sender)
    b = await login(server, receiver)
    a.chat(server.jid(receiver), "still alive?")
    await b.expect_message("still alive?", server.jid(sender))
    b.chat(str(a.boundjid), "yes")
    await a.expect_message("yes", server.jid(receiver))
    await a.close()
    await b.close()


def is_message(e: ET.Element) -> bool:
    return e.tag == q(CLIENT_NS, "message")


# The defined condition of an error stanza, or None (one implementation for both clients).
stanza_error = stanza_error_condition
