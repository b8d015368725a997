"""SASL2 (XEP-0388), Bind2 (XEP-0386) and FAST (XEP-0484) on the wire.

The raw tests control every byte: a FAST login is one write after TLS and the stream header,
answered by one ``<success/>`` that carries the bound session with stream management and
carbons enabled, and a message pipelined behind it flows. The xmpp.js test (``tests/node``) is a
real client doing the same through its own SASL2, Bind2 and FAST support.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import queue
import shutil
import sqlite3
import subprocess
import threading
import uuid
import xml.etree.ElementTree as ET

import pytest

from conftest import PASSWORD
from raw import CLIENT_NS, SASL_NS, RawClient, q

SASL2_NS = "urn:xmpp:sasl:2"
BIND2_NS = "urn:xmpp:bind:0"
FAST_NS = "urn:xmpp:fast:0"
SM_NS = "urn:xmpp:sm:3"
CARBONS_NS = "urn:xmpp:carbons:2"
CSI_NS = "urn:xmpp:csi:0"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def user_agent(ua_id: str) -> str:
    return (
        f"<user-agent id='{ua_id}'><software>xmppd e2e</software>"
        "<device>test rig</device></user-agent>"
    )


BIND_ALL = (
    f"<bind xmlns='{BIND2_NS}'><tag>e2e</tag>"
    f"<enable xmlns='{CARBONS_NS}'/><enable xmlns='{SM_NS}' resume='true'/>"
    f"<inactive xmlns='{CSI_NS}'/></bind>"
)


def authenticate(mech: str, initial: bytes, ua_id: str, inline: str = "") -> str:
    return (
        f"<authenticate xmlns='{SASL2_NS}' mechanism='{mech}'>"
        f"<initial-response>{b64(initial)}</initial-response>"
        f"{user_agent(ua_id)}{inline}</authenticate>"
    )


def ht_proof(token: str) -> bytes:
    return hmac.new(token.encode(), b"Initiator", hashlib.sha256).digest()


def outcome(c: RawClient) -> ET.Element:
    return c.wait_for(
        lambda e: e.tag in (q(SASL2_NS, "success"), q(SASL2_NS, "failure"), q(SASL_NS, "failure"))
    )


def condition(failure: ET.Element) -> str:
    assert failure.tag == q(SASL2_NS, "failure"), ET.tostring(failure)
    for child in failure:
        if child.tag.startswith("{" + SASL_NS + "}"):
            return child.tag.split("}", 1)[1]
    return "(none)"


def secure(server) -> tuple[RawClient, ET.Element]:
    c = RawClient(server.direct_tls_port, direct_tls=True)
    return c, c.open()


def plain_login_with_token(server, ua_id: str, user: str = "alice") -> tuple[RawClient, str, str]:
    """SASL2 PLAIN with Bind2 and a token request: returns the client, its JID and the token."""
    c, features = secure(server)
    auth = features.find(q(SASL2_NS, "authentication"))
    assert auth is not None, ET.tostring(features)
    creds = f"\0{user}\0{PASSWORD}".encode()
    inline = BIND_ALL + f"<request-token xmlns='{FAST_NS}' mechanism='HT-SHA-256-NONE'/>"
    c.send(authenticate("PLAIN", creds, ua_id, inline))
    success = outcome(c)
    assert success.tag == q(SASL2_NS, "success"), ET.tostring(success)
    token = success.find(q(FAST_NS, "token"))
    assert token is not None and token.get("expiry"), ET.tostring(success)
    jid = success.findtext(q(SASL2_NS, "authorization-identifier"))
    return c, jid, token.get("token")


def fast_login(server, user: str, token: str, ua_id: str, fast: str = "", extra: str = ""):
    """A FAST login in one write; returns the client and the outcome."""
    c, _ = secure(server)
    initial = user.encode() + b"\0" + ht_proof(token)
    inline = BIND_ALL + f"<fast xmlns='{FAST_NS}'{fast}/>"
    c.send(authenticate("HT-SHA-256-NONE", initial, ua_id, inline) + extra)
    return c, outcome(c)


def test_features_offer_sasl2_bind2_and_fast_under_tls_only(server):
    c, features = secure(server)
    auth = features.find(q(SASL2_NS, "authentication"))
    assert auth is not None, ET.tostring(features)
    mechs = [m.text for m in auth.findall(q(SASL2_NS, "mechanism"))]
    sasl1 = [m.text for m in features.find(q(SASL_NS, "mechanisms"))]
    assert mechs == sasl1 and "PLAIN" in mechs, (mechs, sasl1)
    inline = auth.find(q(SASL2_NS, "inline"))
    bind = inline.find(q(BIND2_NS, "bind"))
    offered = {f.get("var") for f in bind.iter(q(BIND2_NS, "feature"))}
    assert offered == {CARBONS_NS, SM_NS, CSI_NS}, offered
    assert inline.find(q(SM_NS, "sm")) is not None
    fast = [m.text for m in inline.find(q(FAST_NS, "fast"))]
    assert "HT-SHA-256-NONE" in fast, fast
    c.close()
    plain = RawClient(server.starttls_port)
    features = plain.open()
    assert features.find(q(SASL2_NS, "authentication")) is None, ET.tostring(features)
    plain.close()


def test_sasl2_plain_is_refused_without_tls(make_server):
    server = make_server(c2s={"require_starttls": False})
    c = RawClient(server.starttls_port)
    c.open()
    c.send(authenticate("PLAIN", f"\0alice\0{PASSWORD}".encode(), str(uuid.uuid4())))
    assert condition(outcome(c)) == "encryption-required"
    c.close()


def test_sasl2_login_binds_inline_with_carbons_sm_and_user_agent(server):
    ua_id = str(uuid.uuid4())
    c, jid, _ = plain_login_with_token(server, ua_id)
    assert jid.startswith("alice@localhost/e2e/"), jid
    listed = server.cli("sessions").stdout
    line = next(l for l in listed.splitlines() if l.startswith(jid))
    assert line.endswith(f"xmppd e2e, test rig ({ua_id})"), line
    # Carbons were enabled inline: a message to another resource of alice is copied here.
    other = RawClient(server.direct_tls_port, direct_tls=True)
    other.login("alice", PASSWORD, resource="desk")
    other.send("<presence/>")
    bob = RawClient(server.direct_tls_port, direct_tls=True)
    bob.login("bob", PASSWORD)
    bob.send(
        f"<message to='alice@localhost/desk' type='chat' id='m1'><body>hi desk</body></message>"
    )
    other.wait_for(lambda e: e.tag == q(CLIENT_NS, "message") and e.get("id") == "m1")
    carbon = c.wait_for(lambda e: e.tag == q(CLIENT_NS, "message"))
    assert carbon.find(q(CARBONS_NS, "received")) is not None, ET.tostring(carbon)
    for x in (c, other, bob):
        x.close()


def test_sasl2_without_bind2_binds_with_the_usual_iq(server):
    c, _ = secure(server)
    c.send(authenticate("PLAIN", f"\0alice\0{PASSWORD}".encode(), str(uuid.uuid4())))
    success = outcome(c)
    assert success.findtext(q(SASL2_NS, "authorization-identifier")) == "alice@localhost"
    c.features = c.expect("{http://etherx.jabber.org/streams}features")
    assert c.bind("plain").endswith("/plain")
    c.close()


def test_wrong_password_over_sasl2_fails(server):
    c, _ = secure(server)
    c.send(authenticate("PLAIN", b"\0alice\0wrong", str(uuid.uuid4())))
    assert condition(outcome(c)) == "not-authorized"
    c.close()


def test_fast_login_is_one_round_trip_to_a_managed_session(server):
    ua_id = str(uuid.uuid4())
    first, _, token = plain_login_with_token(server, ua_id)
    first.close()
    bob = RawClient(server.direct_tls_port, direct_tls=True)
    bob.login("bob", PASSWORD)
    bob.send("<presence/>")
    # One write: the token login, Bind2 with stream management, and a message behind it.
    c, _ = secure(server)
    initial = b"alice\0" + ht_proof(token)
    c.send(
        authenticate("HT-SHA-256-NONE", initial, ua_id, BIND_ALL + f"<fast xmlns='{FAST_NS}' count='1'/>")
        + "<message to='bob@localhost' type='chat' id='fast1'><body>fast hello</body></message>"
    )
    # The next thing the server sends is <success/>, with everything in it.
    success = c.next_element()
    assert success.tag == q(SASL2_NS, "success"), ET.tostring(success)
    data = base64.b64decode(success.findtext(q(SASL2_NS, "additional-data")))
    assert data == hmac.new(token.encode(), b"Responder", hashlib.sha256).digest()
    bound = success.find(q(BIND2_NS, "bound"))
    assert bound is not None and bound.find(q(SM_NS, "enabled")) is not None, ET.tostring(success)
    assert bound.find(q(SM_NS, "enabled")).get("resume") == "true"
    got = bob.wait_for(lambda e: e.tag == q(CLIENT_NS, "message") and e.get("id") == "fast1")
    assert got.findtext(q(CLIENT_NS, "body")) == "fast hello"
    assert got.get("from").startswith("alice@localhost/e2e/")
    # And the other way (to the full JID: the session sent no presence).
    alice = got.get("from")
    bob.send(f"<message to='{alice}' type='chat' id='back1'><body>back</body></message>")
    c.wait_for(lambda e: e.tag == q(CLIENT_NS, "message") and e.get("id") == "back1")
    # A replayed count is refused.
    replay, failure = fast_login(server, "alice", token, ua_id, fast=" count='1'")
    assert condition(failure) == "not-authorized"
    for x in (c, bob, replay):
        x.close()


def test_fast_failures_wrong_other_client_invalidated_expired_revoked(server):
    ua_id = str(uuid.uuid4())
    c, _, token = plain_login_with_token(server, ua_id)
    c.close()
    # A wrong token, and the right token from another user agent.
    for t, ua in ((token[:-4] + "AAAA", ua_id), (token, str(uuid.uuid4()))):
        x, failure = fast_login(server, "alice", t, ua)
        assert condition(failure) == "not-authorized"
        x.close()
    # The right one works, and invalidates itself on request.
    x, success = fast_login(server, "alice", token, ua_id, fast=" invalidate='true'")
    assert success.tag == q(SASL2_NS, "success"), ET.tostring(success)
    x.close()
    x, failure = fast_login(server, "alice", token, ua_id)
    assert condition(failure) == "not-authorized"
    x.close()
    # An expired token fails (its expiry moved into the past in the database).
    c, _, token = plain_login_with_token(server, ua_id)
    c.close()
    db = sqlite3.connect(server.config["storage"]["sqlite_path"])
    stored = db.execute("SELECT hash FROM fast_tokens").fetchall()
    assert hashlib.sha256(token.encode()).digest() in [bytes(h) for (h,) in stored]
    assert token.encode() not in b"".join(bytes(h) for (h,) in stored)
    db.execute("UPDATE fast_tokens SET expires_ms = 0")
    db.commit()
    db.close()
    x, failure = fast_login(server, "alice", token, ua_id)
    assert condition(failure) == "not-authorized"
    x.close()
    # Revoked from the command line, and by a password change.
    c, _, token = plain_login_with_token(server, ua_id)
    c.close()
    assert ua_id in server.cli("fast", "list", "alice@localhost").stdout
    # The expired one is still listed until revoked: two tokens.
    assert "revoked 2 token(s)" in server.cli("fast", "revoke", "alice@localhost").stdout
    assert server.cli("fast", "list").stdout == ""
    x, failure = fast_login(server, "alice", token, ua_id)
    assert condition(failure) == "not-authorized"
    x.close()
    c, _, token = plain_login_with_token(server, ua_id)
    c.close()
    server.cli("passwd", "alice", "localhost", input=PASSWORD + "\n")
    x, failure = fast_login(server, "alice", token, ua_id)
    assert condition(failure) == "not-authorized"
    x.close()


XMPPJS = pathlib.Path(__file__).resolve().parents[1] / "node"


def test_xmppjs_logs_in_with_sasl2_bind2_then_fast_and_exchanges_messages(server):
    """xmpp.js: SASL2 + Bind2 with a password and a token request; then a new connection with
    a wrong password, which only its FAST token can log in, with stream management enabled
    inline; then a message each way."""
    node = shutil.which("node")
    installed = (XMPPJS / "node_modules" / "@xmpp" / "client").is_dir()
    if not (node and installed):
        if os.environ.get("XMPPD_E2E_CI"):
            pytest.fail("node and tests/node/node_modules are installed by cargo xtask ci")
        pytest.skip("xmpp.js not installed (cargo xtask ci installs it)")
    bob = RawClient(server.direct_tls_port, direct_tls=True)
    bob_jid = bob.login("bob", PASSWORD)
    ua_id = str(uuid.uuid4())
    proc = subprocess.Popen(
        [node, "sasl2_fast.mjs", str(server.direct_tls_port), "alice", PASSWORD, bob_jid, ua_id],
        cwd=XMPPJS,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        # The server's certificate is self-signed.
        env={**os.environ, "NODE_TLS_REJECT_UNAUTHORIZED": "0"},
    )
    lines: queue.Queue = queue.Queue()
    def pump():
        for line in iter(proc.stderr.readline, ""):
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def step(name: str) -> dict:
        while True:
            try:
                line = lines.get(timeout=60)
                if not line.startswith("{"):
                    continue  # node's own warnings
                got = json.loads(line)
            except queue.Empty:
                proc.kill()
                pytest.fail(f"no {name!r} step from xmpp.js")
            assert got["step"] not in ("failed", "error"), got
            if got["step"] == name:
                return got

    try:
        first = step("password")
        assert first["jid"].startswith("alice@localhost/xmppjs/"), first
        assert first["mechanism"] in ("SCRAM-SHA-1", "PLAIN"), first
        assert first["token"], first
        fast = step("fast")
        assert fast["mechanism"] == "HT-SHA-256-NONE", fast
        assert fast["jid"].startswith("alice@localhost/xmppjs/"), fast
        assert fast["sm"] is True, fast
        msg = bob.wait_for(lambda e: e.tag == q(CLIENT_NS, "message") and e.get("id") == "js1")
        assert msg.get("from") == fast["jid"]
        assert msg.findtext(q(CLIENT_NS, "body")) == "hello from xmpp.js"
        bob.send(f"<message to='{fast['jid']}' type='chat'><body>hello from bob</body></message>")
        assert step("received")["body"] == "hello from bob"
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        bob.close()
