"""A deliberately small, blocking XMPP wire client for tests that must control every byte.

slixmpp (see ``clients.py``) is used for everything a real client does; this module exists for
what a well-behaved client never does: malformed XML, oversized stanzas, wrong namespaces,
stanzas before authentication, half-sent stanzas, TLS with chosen versions. It parses what the
server sends with the standard library's incremental XML parser, so a server that emits
malformed XML fails the test with a parse error.

It does not implement SCRAM, reconnection or anything asynchronous.
"""

from __future__ import annotations

import base64
import itertools
import socket
import ssl
import time
import xml.etree.ElementTree as ET

STREAM_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
STREAMS_ERR_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZAS_ERR_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"

_ids = itertools.count(1)


def new_id(prefix: str = "raw") -> str:
    return f"{prefix}{next(_ids)}"


def q(ns: str, name: str) -> str:
    """Clark notation, as ElementTree names elements."""
    return f"{{{ns}}}{name}"


def trust_all_context(
    *,
    alpn: list[str] | None = None,
    min_version: ssl.TLSVersion | None = None,
    max_version: ssl.TLSVersion | None = None,
) -> ssl.SSLContext:
    """A client context that accepts the server's self-signed certificate.

    Certificate validation itself is tested separately (``test_tls.py`` configures a CA).
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    if min_version is not None:
        ctx.minimum_version = min_version
    if max_version is not None:
        ctx.maximum_version = max_version
    return ctx


def stream_error_condition(element: ET.Element) -> str | None:
    """The defined condition of a ``<stream:error/>``, or None if it is not one."""
    if element.tag != q(STREAM_NS, "error"):
        return None
    for child in element:
        if child.tag.startswith("{" + STREAMS_ERR_NS + "}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "(no condition)"


def stanza_error_condition(element: ET.Element) -> str | None:
    """The defined condition of a stanza of type='error', or None."""
    err = element.find(q(CLIENT_NS, "error"))
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{" + STANZAS_ERR_NS + "}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return "(no condition)"


class StreamClosed(Exception):
    """The server closed the XML stream or the TCP connection."""


class _StreamReader:
    """Turns bytes into top-level stream elements (depth-1 children of ``<stream:stream>``)."""

    def __init__(self) -> None:
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root: ET.Element | None = None
        self.closed = False
        self.ready: list[ET.Element] = []

    def feed(self, data: bytes) -> None:
        self.parser.feed(data)
        for event, elem in self.parser.read_events():
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = elem
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.ready.append(elem)
                    if self.root is not None:
                        self.root.remove(elem)
                elif self.depth == 0:
                    self.closed = True


class RawClient:
    """One TCP (optionally TLS) connection speaking XMPP by hand."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "127.0.0.1",
        direct_tls: bool = False,
        tls_context: ssl.SSLContext | None = None,
        timeout: float = 10.0,
        rcvbuf: int | None = None,
        source: str | None = None,
        tls_session: ssl.SSLSession | None = None,
    ) -> None:
        """``tls_session``: a TLS session of an earlier connection to resume.
        ``rcvbuf`` shrinks the socket's receive buffer (set before connecting, so the TCP
        window stays that small): a client on a slow link, for back-pressure tests.
        ``source``: the local address to connect from (any of 127.0.0.0/8 on loopback), for
        per-address limits."""
        self.timeout = timeout
        if rcvbuf is None:
            bind = (source, 0) if source else None
            sock = socket.create_connection((host, port), timeout=timeout, source_address=bind)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect((host, port))
        self.tls = False
        if direct_tls:
            ctx = tls_context or trust_all_context(alpn=["xmpp-client"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost", session=tls_session)
            self.tls = True
        self.sock = sock
        self.reader = _StreamReader()
        self.eof = False
        self.features: ET.Element | None = None
        self.jid: str | None = None

    # --- bytes ---------------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self, deadline: float) -> None:
        """Reads once from the socket into the parser; raises TimeoutError past the deadline."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no data from server in time")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            raise TimeoutError("no data from server in time") from None
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            data = b""
        if not data:
            self.eof = True
            return
        self.reader.feed(data)

    # --- elements ------------------------------------------------------------------------

    def next_element(self, timeout: float | None = None) -> ET.Element:
        """The next complete top-level element; StreamClosed at ``</stream:stream>`` or EOF."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while not self.reader.ready:
            if self.reader.closed or self.eof:
                raise StreamClosed()
            self._fill(deadline)
        return self.reader.ready.pop(0)

    def expect(self, tag: str, timeout: float | None = None, *, skip: tuple[str, ...] = ()):
        """The next element, asserting its qualified tag; elements tagged in ``skip`` are
        dropped first (e.g. presence that may or may not arrive)."""
        while True:
            elem = self.next_element(timeout)
            if elem.tag in skip:
                continue
            assert elem.tag == tag, f"expected {tag}, got {ET.tostring(elem)!r}"
            return elem

    def wait_for(self, predicate, timeout: float | None = None) -> ET.Element:
        """Skips elements until one matches ``predicate``."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("expected element did not arrive")
            elem = self.next_element(remaining)
            if predicate(elem):
                return elem

    def expect_stream_error(self, timeout: float | None = None) -> str:
        """Reads until a stream error arrives and returns its condition; then checks that the
        server also closes the stream (RFC 6120 §4.9.1.1: the error is followed by
        ``</stream:stream>`` and the TCP connection is closed)."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            try:
                elem = self.next_element(max(0.01, deadline - time.monotonic()))
            except StreamClosed:
                raise AssertionError("stream closed without a <stream:error/>") from None
            condition = stream_error_condition(elem)
            if condition is not None:
                break
        assert self.wait_closed(5.0), f"stream not closed after <{condition}/> stream error"
        return condition

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True once the server has closed the stream or the connection within ``timeout``."""
        deadline = time.monotonic() + timeout
        while not (self.reader.closed or self.eof):
            try:
                self._fill(deadline)
            except TimeoutError:
                return False
            except ET.ParseError:
                return self.eof
            self.reader.ready.clear()
        return True

    # --- stream negotiation --------------------------------------------------------------

    def send_header(self, to: str = "localhost", *, header: str | None = None) -> None:
        """Starts a new stream: resets the parser and sends a stream header (a standard one
        unless ``header`` is given)."""
        self.reader = _StreamReader()
        if header is None:
            header = (
                "<?xml version='1.0'?>"
                f"<stream:stream to='{to}' version='1.0' xml:lang='en' "
                f"xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}'>"
            )
        self.send(header)

    def open(self, to: str = "localhost", *, header: str | None = None) -> ET.Element:
        """Sends a stream header and returns the stream features."""
        self.send_header(to, header=header)
        self.features = self.expect(q(STREAM_NS, "features"))
        return self.features

    def starttls(self, ctx: ssl.SSLContext | None = None,
                 session: ssl.SSLSession | None = None) -> None:
        self.send(f"<starttls xmlns='{TLS_NS}'/>")
        self.expect(q(TLS_NS, "proceed"))
        ctx = ctx or trust_all_context()
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname="localhost", session=session)
        self.tls = True

    def auth_plain(self, user: str, password: str) -> ET.Element:
        """One SASL PLAIN attempt; returns ``<success/>`` or ``<failure/>``."""
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
        return self.wait_for(lambda e: e.tag in (q(SASL_NS, "success"), q(SASL_NS, "failure")))

    def bind(self, resource: str | None = None) -> str:
        """Binds a resource and returns the full JID the server assigned."""
        rid = new_id("bind")
        inner = f"<resource>{resource}</resource>" if resource else ""
        self.send(f"<iq type='set' id='{rid}'><bind xmlns='{BIND_NS}'>{inner}</bind></iq>")
        reply = self.wait_for(lambda e: e.get("id") == rid)
        assert reply.get("type") == "result", ET.tostring(reply)
        jid = reply.findtext(f"{q(BIND_NS, 'bind')}/{q(BIND_NS, 'jid')}")
        assert jid, ET.tostring(reply)
        self.jid = jid
        return jid

    def iq(self, kind: str, payload: str, to: str | None = None, timeout=None) -> ET.Element:
        """Sends an iq and returns the reply with the same id."""
        rid = new_id("iq")
        to_attr = f" to='{to}'" if to else ""
        self.send(f"<iq type='{kind}' id='{rid}'{to_attr}>{payload}</iq>")
        return self.wait_for(
            lambda e: e.tag == q(CLIENT_NS, "iq") and e.get("id") == rid, timeout
        )

    def login(
        self,
        user: str,
        password: str,
        *,
        domain: str = "localhost",
        resource: str | None = None,
    ) -> str:
        """Full negotiation: STARTTLS (unless already on TLS), PLAIN, bind. Returns the JID."""
        features = self.open(domain)
        if not self.tls:
            assert features.find(q(TLS_NS, "starttls")) is not None, ET.tostring(features)
            self.starttls()
            self.open(domain)
        result = self.auth_plain(user, password)
        assert result.tag == q(SASL_NS, "success"), ET.tostring(result)
        self.open(domain)
        return self.bind(resource)
