"""Stream-level defences (RFC 6120 §4.9): every bad input ends that one stream with the right
``<stream:error/>`` and the connection closed — and the server keeps serving everyone else,
which each test checks by logging two fresh clients in and chatting."""

import socket
import time

import pytest

from clients import assert_chat_works, async_test, login
from conftest import PASSWORD
from raw import CLIENT_NS, STREAM_NS, RawClient, StreamClosed, q

PRE_AUTH_LIMIT = 4096
POST_AUTH_LIMIT = 32768
LIMITS = {"c2s": {"starttls_listen": ["127.0.0.1:0"], "direct_tls_listen": ["127.0.0.1:0"],
                  "pre_auth_max_stanza_bytes": PRE_AUTH_LIMIT,
                  "max_stanza_bytes": POST_AUTH_LIMIT}}


def tls_pre_auth(server) -> RawClient:
    """A connection that has negotiated TLS but not authenticated."""
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.starttls()
    client.open(server.domain)
    return client


@pytest.mark.parametrize("bad, accepted", [
    ("<message><body>unclosed</bdy></message>", ("not-well-formed",)),
    ("<message to='bob@localhost' type='chat' type='chat'/>", ("not-well-formed",)),
    # An undeclared prefix breaks XML namespaces; RFC 6120 §4.9.3.2 has a condition for it.
    ("<a:message xmlns:b='x'/>", ("not-well-formed", "bad-namespace-prefix")),
    ("\x01<message/>", ("not-well-formed",)),
    ("<message><body>a < b</body></message>", ("not-well-formed",)),
])
@async_test()
async def test_not_well_formed(server, bad, accepted):
    client = tls_pre_auth(server)
    client.send(bad)
    assert client.expect_stream_error() in accepted
    await assert_chat_works(server)


@async_test()
async def test_not_well_formed_after_auth(server):
    client = RawClient(server.starttls_port)
    client.login("carol", PASSWORD)
    client.send("<presence><status>a</status></presence><message><body>x</wrong></message>")
    assert client.expect_stream_error() == "not-well-formed"
    await assert_chat_works(server)


@pytest.mark.parametrize("restricted, accepted", [
    ("<!-- a comment -->", ("restricted-xml",)),
    ("<?xml-stylesheet href='x'?>", ("restricted-xml",)),
    # A DTD or an undeclared entity inside the stream is also not well-formed XML, so either
    # condition is a correct answer there.
    ("<!DOCTYPE x>", ("restricted-xml", "not-well-formed")),
    ("<message><body>&custom;</body></message>", ("restricted-xml", "not-well-formed")),
])
@async_test()
async def test_restricted_xml(server, restricted, accepted):
    # RFC 6120 §11.1: comments, processing instructions, DTDs and entity references other
    # than the predefined ones are forbidden in a stream.
    client = tls_pre_auth(server)
    client.send(restricted)
    assert client.expect_stream_error() in accepted
    await assert_chat_works(server)


@async_test()
async def test_doctype_before_stream_header_is_restricted(server):
    client = RawClient(server.starttls_port)
    client.send("<?xml version='1.0'?><!DOCTYPE stream:stream [<!ENTITY boom 'boom'>]>")
    client.send_header(server.domain)
    assert client.expect_stream_error() == "restricted-xml"
    await assert_chat_works(server)


@async_test()
async def test_oversized_stanza_before_auth(make_server):
    server = make_server(**LIMITS)
    client = tls_pre_auth(server)
    body = "x" * (PRE_AUTH_LIMIT + 1024)
    client.send(f"<message to='bob@localhost'><body>{body}</body></message>")
    assert client.expect_stream_error() == "policy-violation"
    await assert_chat_works(server)


@async_test()
async def test_oversized_stanza_after_auth(make_server):
    server = make_server(**LIMITS)
    bob = await login(server, "bob")
    # A large stanza inside the post-auth limit (but far above the pre-auth one) goes through.
    alice = RawClient(server.starttls_port)
    alice.login("alice", PASSWORD)
    fits = "y" * (POST_AUTH_LIMIT // 2)
    alice.send(f"<message to='bob@localhost' type='chat'><body>{fits}</body></message>")
    await bob.expect_message(fits, "alice@localhost")
    alice.send(
        f"<message to='bob@localhost' type='chat'><body>{'z' * (POST_AUTH_LIMIT + 1024)}</body>"
        "</message>")
    assert alice.expect_stream_error() == "policy-violation"
    await bob.expect_none(lambda e: e.tag == q(CLIENT_NS, "message"), within=1.0,
                          what="oversized message delivered")
    await bob.close()
    await assert_chat_works(server)


@async_test()
async def test_oversized_stanza_sent_slowly_is_cut_off(make_server):
    # The limit must hold while the stanza is still arriving, not only once it is complete:
    # a never-ending stanza would otherwise grow the server's buffer without bound.
    server = make_server(**LIMITS)
    client = tls_pre_auth(server)
    client.send("<message to='bob@localhost'><body>")
    # Stop shortly after the limit: data the server never reads could turn its close into a
    # TCP reset that swallows the stream error.
    for _ in range(PRE_AUTH_LIMIT // 1024 + 2):
        try:
            client.send("w" * 1024)
        except OSError:
            break
        time.sleep(0.05)
    assert client.expect_stream_error() == "policy-violation"
    await assert_chat_works(server)


@pytest.mark.parametrize("header", [
    # Wrong stream namespace.
    "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
    "xmlns:stream='http://example.com/not-streams'>",
    # Wrong content namespace for a client-to-server stream.
    "<stream:stream to='localhost' version='1.0' xmlns='urn:example:not-a-client' "
    "xmlns:stream='http://etherx.jabber.org/streams'>",
])
@async_test()
async def test_invalid_namespace(server, header):
    client = RawClient(server.starttls_port)
    client.send_header(header=header)
    assert client.expect_stream_error() == "invalid-namespace"
    await assert_chat_works(server)


@async_test()
async def test_unknown_host(server):
    client = RawClient(server.starttls_port)
    client.send_header("not-served-here.example")
    # RFC 6120 §4.9.3.6: the server still opens its side of the stream, then errors.
    assert client.expect_stream_error() == "host-unknown"
    assert client.reader.root is not None and client.reader.root.tag == q(STREAM_NS, "stream")
    await assert_chat_works(server)


@pytest.mark.parametrize("stanza", [
    "<message to='bob@localhost' type='chat'><body>sneaky</body></message>",
    "<presence/>",
    "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
])
@async_test()
async def test_stanza_before_auth(server, stanza):
    bob = await login(server, "bob")
    client = tls_pre_auth(server)
    client.send(stanza)
    assert client.expect_stream_error() == "not-authorized"
    await bob.expect_none(lambda e: e.tag == q(CLIENT_NS, "message"), within=1.0,
                          what="unauthenticated message delivered")
    await bob.close()
    await assert_chat_works(server)


@async_test()
async def test_stanza_before_tls_is_refused(server):
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.send("<message to='bob@localhost'><body>plaintext</body></message>")
    assert client.expect_stream_error() in ("not-authorized", "policy-violation")
    await assert_chat_works(server)


@async_test()
async def test_disconnect_mid_stanza(server):
    bob = await login(server, "bob")
    client = RawClient(server.starttls_port)
    client.login("alice", PASSWORD)
    client.send("<message to='bob@localhost' type='chat'><body>half a mess")
    client.close()
    await bob.expect_none(lambda e: e.tag == q(CLIENT_NS, "message"), within=1.0,
                          what="partial message delivered")
    await bob.close()
    await assert_chat_works(server)


@async_test()
async def test_disconnect_mid_tls_handshake(server):
    # Half a TLS ClientHello on the direct-TLS port, then gone.
    sock = socket.create_connection(("127.0.0.1", server.direct_tls_port), timeout=5)
    sock.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    sock.close()
    await assert_chat_works(server)


@async_test()
async def test_many_bad_connections_do_not_hurt(server):
    for i in range(20):
        client = RawClient(server.starttls_port)
        client.send([b"<bad", b"<stream:stream xmlns:stream='x'>", b"\xff\xfe", b"</x>"][i % 4])
        client.close()
    await assert_chat_works(server)


def login_once_admitted(server, resource: str) -> RawClient:
    """Logs alice in as soon as the server admits the connection: it frees an address's slots
    when it notices the closes, which a loaded machine may take a while to do."""
    deadline = time.monotonic() + 15
    while True:
        c = RawClient(server.starttls_port)
        try:
            c.login("alice", PASSWORD, resource=resource)
            return c
        except (StreamClosed, OSError):
            c.close()
            assert time.monotonic() < deadline, "closed connections still count after 15 s"
            time.sleep(0.05)


@async_test()
async def test_idle_connections_before_login_are_capped_per_address(make_server):
    server = make_server(c2s={"starttls_listen": ["127.0.0.1:0"],
                              "direct_tls_listen": ["127.0.0.1:0"],
                              "max_pending_per_ip": 3})
    idle = [socket.create_connection(("127.0.0.1", server.starttls_port), timeout=5)
            for _ in range(3)]
    # A fourth connection from the same address is closed at once, before any byte.
    extra = socket.create_connection(("127.0.0.1", server.starttls_port), timeout=5)
    extra.settimeout(5)
    assert extra.recv(1) == b"", "over the per-address limit: the connection is closed"
    extra.close()
    # Logged-in sessions do not count against the limit, so once the idle ones go, clients
    # log in and chat again; more sessions than the limit may be open together.
    for sock in idle:
        sock.close()
    clients = [login_once_admitted(server, f"r{i}") for i in range(4)]
    await assert_chat_works(server)
    for c in clients:
        c.close()
