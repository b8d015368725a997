"""The administration API (`[admin_http]`, `/api`) through a real HTTP client (urllib), and
what it does as XMPP clients (slixmpp) see it: accounts, sessions, messages, the message of
the day and rooms; tokens refused when missing, wrong, expired, revoked or out of scope; the
OpenAPI document against the routes that answer."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, LoginFailed, async_test, can_login, is_message, login, q

MUC = "conference.localhost"
NS_DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
ADMIN_HTTP = {"admin_http": {"enabled": True, "listen": ["127.0.0.1:0"]}}


class Answer:
    def __init__(self, status: int, headers, body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:300]!r}>"


def call(server, method: str, path: str, body=None, token: str | None = None,
         content_type: str = "application/json", raw: bytes | None = None) -> Answer:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(
        f"http://127.0.0.1:{server.admin_http_port}{path}", data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as err:
        return Answer(err.code, err.headers, err.read())


async def api(server, method: str, path: str, body=None, **kw) -> Answer:
    """`call` off the event loop, so the XMPP clients keep reading meanwhile."""
    return await asyncio.to_thread(call, server, method, path, body, **kw)


def token(server, scope: str = "admin", *extra: str) -> str:
    out = server.cli("api-token", "create", "--scope", scope, *extra).stdout
    return out.strip()


def is_body(text):
    return lambda e: is_message(e) and e.findtext(q(CLIENT_NS, "body")) == text


async def wait_for_stream_error(client) -> list[str]:
    for _ in range(200):
        if client.stream_errors:
            break
        await client.expect_none(lambda e: False, within=0.05)
    return client.stream_errors


def test_openapi_documents_every_route_and_each_answers(make_server):
    server = make_server(**ADMIN_HTTP)
    admin = token(server)
    doc = call(server, "GET", "/api/openapi.json")
    assert doc.status == 200, doc
    assert doc.json["openapi"].startswith("3."), doc.json
    paths = doc.json["paths"]
    assert len(paths) >= 10, paths
    for path, methods in paths.items():
        concrete = path.replace("{jid}", "nobody@localhost").replace("{host}", "localhost")
        for method, op in methods.items():
            body = {} if "requestBody" in op else None
            got = call(server, method.upper(), concrete, body, token=admin)
            # Answered by the route: whatever it says, it is not "no such route".
            assert got.status != 405, (method, path, got)
            assert not (got.status == 404 and "no route" in got.json["message"]), (path, got)
            documented = {int(s) for s in op["responses"]}
            assert got.status in documented, (method, path, got, documented)
    # What is not documented is not served.
    assert call(server, "GET", "/api/shutdown", token=admin).status == 404
    unknown_method = call(server, "PATCH", "/api/users", token=admin)
    assert unknown_method.status == 405, unknown_method
    assert set(unknown_method.headers["Allow"].split(", ")) == {
        m.upper() for m in paths["/api/users"]}


def test_tokens_missing_wrong_expired_revoked_or_out_of_scope_are_refused(make_server):
    server = make_server(**ADMIN_HTTP)
    missing = call(server, "GET", "/api/users")
    assert missing.status == 401 and missing.json["error"] == "unauthorized", missing
    assert missing.headers["WWW-Authenticate"].startswith("Bearer"), missing.headers
    wrong = call(server, "GET", "/api/users", token="xmppd.0123456789ab.nope")
    assert wrong.status == 401, wrong
    assert 'error="invalid_token"' in wrong.headers["WWW-Authenticate"]
    # A real token's id with another secret.
    good = token(server, "read")
    forged = good.rsplit(".", 1)[0] + ".AAAA"
    assert call(server, "GET", "/api/users", token=forged).status == 401
    assert call(server, "GET", "/api/users", token=good).status == 200

    # Read scope: reading yes, changing no.
    refused = call(server, "POST", "/api/broadcast", {"body": "x"}, token=good)
    assert refused.status == 403 and refused.json["error"] == "forbidden", refused
    assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]
    metrics_only = token(server, "metrics")
    assert call(server, "GET", "/api/stats", token=metrics_only).status == 403

    # Expired: a lifetime of about 90 ms, then refused as expired.
    short = token(server, "admin", "--expires", "0.000001")
    deadline = time.monotonic() + 30
    while True:
        got = call(server, "GET", "/api/users", token=short)
        if got.status == 401:
            break
        assert got.status == 200 and time.monotonic() < deadline, got
        time.sleep(0.05)
    assert "expired" in got.json["message"], got

    # Revoked by id, as `api-token list` shows it.
    listed = server.cli("api-token", "list").stdout
    token_id = good.split(".")[1]
    assert token_id in listed and "\tread\t" in listed, listed
    assert good not in listed
    server.cli("api-token", "revoke", token_id)
    assert call(server, "GET", "/api/users", token=good).status == 401
    again = server.cli("api-token", "revoke", token_id, check=False)
    assert again.returncode == 1 and "no token" in again.stderr


@async_test()
async def test_accounts_over_the_api_and_slixmpp_logins(make_server):
    server = make_server(**ADMIN_HTTP)
    admin = token(server)
    made = await api(server, "POST", "/api/users",
                     {"jid": "dave@localhost", "password": "first pass"}, token=admin)
    assert made.status == 201 and made.json == {"jid": "dave@localhost"}, made
    dave = await login(server, "dave", password="first pass")
    await dave.close()
    listed = await api(server, "GET", "/api/users", token=admin)
    assert "dave@localhost" in listed.json["users"] and "alice@localhost" in listed.json["users"]

    exists = await api(server, "POST", "/api/users",
                       {"jid": "dave@localhost", "password": "x"}, token=admin)
    assert exists.status == 409 and exists.json["error"] == "exists", exists
    missing = await api(server, "POST", "/api/users", {"jid": "erin@localhost"}, token=admin)
    assert missing.status == 400 and missing.json["field"] == "password", missing
    typed = await api(server, "POST", "/api/users", {"jid": 5, "password": "x"}, token=admin)
    assert typed.status == 400 and typed.json["field"] == "jid", typed
    bad_jid = await api(server, "POST", "/api/users",
                        {"jid": "not a jid@@", "password": "x"}, token=admin)
    assert bad_jid.status == 400 and bad_jid.json["field"] == "jid", bad_jid
    elsewhere = await api(server, "POST", "/api/users",
                          {"jid": "erin@example.net", "password": "x"}, token=admin)
    assert elsewhere.status == 404, elsewhere
    not_json = await asyncio.to_thread(call, server, "POST", "/api/users", token=admin,
                                       raw=b"{", content_type="application/json")
    assert not_json.status == 400 and not_json.json["error"] == "bad_json", not_json
    form = await asyncio.to_thread(call, server, "POST", "/api/users", token=admin,
                                   raw=b"jid=x", content_type="application/x-www-form-urlencoded")
    assert form.status == 415, form
    huge = {"jid": "erin@localhost", "password": "x" * (128 * 1024)}
    too_large = await api(server, "POST", "/api/users", huge, token=admin)
    assert too_large.status == 413, too_large

    changed = await api(server, "PUT", "/api/users/dave@localhost/password",
                        {"password": "second pass"}, token=admin)
    assert changed.status == 200, changed
    assert not await can_login(server, "dave", "first pass")
    assert await can_login(server, "dave", "second pass")
    nobody = await api(server, "PUT", "/api/users/nobody@localhost/password",
                       {"password": "x"}, token=admin)
    assert nobody.status == 404, nobody

    dave = await login(server, "dave", password="second pass")
    removed = await api(server, "DELETE", "/api/users/dave@localhost", token=admin)
    assert removed.status == 200 and removed.json["jid"] == "dave@localhost", removed
    assert await wait_for_stream_error(dave), "the removed account's session did not end"
    try:
        await login(server, "dave", password="second pass")
        raise AssertionError("a removed account logged in")
    except LoginFailed:
        pass
    again = await api(server, "DELETE", "/api/users/dave@localhost", token=admin)
    assert again.status == 404, again


@async_test()
async def test_sessions_are_listed_and_kicked(make_server):
    server = make_server(**ADMIN_HTTP)
    admin = token(server)
    alice = await login(server, "alice", resource="desk")
    bob = await login(server, "bob", resource="phone")
    listed = await api(server, "GET", "/api/sessions", token=token(server, "read"))
    assert listed.status == 200, listed
    by_jid = {s["jid"]: s for s in listed.json["sessions"]}
    desk = by_jid["alice@localhost/desk"]
    assert desk["user"] == "alice@localhost" and desk["resource"] == "desk", desk
    assert desk["ip"] == "127.0.0.1" and desk["started"], desk

    kicked = await api(server, "DELETE", "/api/sessions/alice@localhost/desk", token=admin)
    assert kicked.status == 200 and kicked.json == {"ended": 1}, kicked
    assert await wait_for_stream_error(alice) == ["policy-violation"]
    gone = await api(server, "DELETE", "/api/sessions/alice@localhost/desk", token=admin)
    assert gone.status == 404, gone
    # A bare JID ends every session of the account.
    await api(server, "DELETE", "/api/sessions/bob@localhost", token=admin)
    assert await wait_for_stream_error(bob) == ["policy-violation"]


@async_test()
async def test_sessions_hide_the_address_when_logs_do(make_server):
    server = make_server(server={"hide_ip_in_logs": True}, **ADMIN_HTTP)
    alice = await login(server, "alice")
    listed = await api(server, "GET", "/api/sessions", token=token(server, "read"))
    [session] = listed.json["sessions"]
    assert session["jid"].startswith("alice@localhost/") and session["ip"] is None, session
    await alice.close()


@async_test()
async def test_messages_broadcast_and_motd_arrive(make_server):
    server = make_server(**ADMIN_HTTP)
    admin = token(server)
    alice = await login(server, "alice")
    bob = await login(server, "bob")

    sent = await api(server, "POST", "/api/messages",
                     {"to": "bob@localhost", "body": "from the API", "type": "headline",
                      "subject": "note"}, token=admin)
    assert sent.status == 202, sent
    msg = await bob.expect(is_body("from the API"), what="API message")
    assert msg.get("type") == "headline" and msg.get("from") == "localhost", ET.tostring(msg)
    assert msg.findtext(q(CLIENT_NS, "subject")) == "note"
    as_alice = await api(server, "POST", "/api/messages",
                         {"to": "bob@localhost", "from": "alice@localhost", "body": "hi bob"},
                         token=admin)
    assert as_alice.status == 202, as_alice
    msg = await bob.expect(is_body("hi bob"), what="message from alice")
    assert msg.get("from") == "alice@localhost" and msg.get("type") == "chat"
    bad_type = await api(server, "POST", "/api/messages",
                         {"to": "bob@localhost", "body": "x", "type": "groupchat"}, token=admin)
    assert bad_type.status == 400 and bad_type.json["field"] == "type", bad_type
    spoof = await api(server, "POST", "/api/messages",
                      {"to": "bob@localhost", "body": "x", "from": "eve@example.net"},
                      token=admin)
    assert spoof.status == 400 and spoof.json["field"] == "from", spoof

    told = await api(server, "POST", "/api/broadcast", {"body": "maintenance at 5"}, token=admin)
    assert told.status == 200 and told.json == {"sessions": 2}, told
    for client in (alice, bob):
        await client.expect(is_body("maintenance at 5"), what="broadcast")

    motd = await api(server, "PUT", "/api/motd/localhost",
                     {"body": "welcome back", "subject": "MOTD"}, token=admin)
    assert motd.status == 200 and motd.json["sessions"] == 2, motd
    for client in (alice, bob):
        await client.expect(is_body("welcome back"), what="message of the day")
    carol = await login(server, "carol")
    await carol.expect(is_body("welcome back"), what="message of the day at login")
    cleared = await api(server, "DELETE", "/api/motd/localhost", token=admin)
    assert cleared.status == 200, cleared
    unknown = await api(server, "PUT", "/api/motd/example.net", {"body": "x"}, token=admin)
    assert unknown.status == 404, unknown


async def disco_rooms(client) -> set[str]:
    items = await client.iq("get", f"<query xmlns='{NS_DISCO_ITEMS}'/>", to=MUC)
    return {i.get("jid") for i in items.iter(q(NS_DISCO_ITEMS, "item"))}


@async_test()
async def test_rooms_created_listed_and_destroyed(make_server):
    server = make_server(**ADMIN_HTTP)
    admin = token(server)
    room = f"lobby@{MUC}"
    made = await api(server, "POST", "/api/rooms",
                     {"jid": room, "owner": "alice@localhost", "name": "Lobby"}, token=admin)
    assert made.status == 201, made
    listed = await api(server, "GET", "/api/rooms", token=admin)
    assert {"jid": room, "name": "Lobby", "listed": True} in listed.json["rooms"], listed
    bob = await login(server, "bob")
    assert room in await disco_rooms(bob)
    exists = await api(server, "POST", "/api/rooms",
                       {"jid": room, "owner": "alice@localhost"}, token=admin)
    assert exists.status == 409, exists
    no_service = await api(server, "POST", "/api/rooms",
                           {"jid": "x@chat.example.net", "owner": "alice@localhost"},
                           token=admin)
    assert no_service.status == 404, no_service

    # Configured already: bob enters at once, then hears of its destruction.
    bob.send_presence(pto=f"{room}/bob")
    await bob.expect(lambda e: e.tag == q(CLIENT_NS, "presence") and e.get("from") == f"{room}/bob"
                     and e.get("type") is None, what="joined")
    destroyed = await api(server, "DELETE", f"/api/rooms/{room}", token=admin)
    assert destroyed.status == 200, destroyed
    gone = await bob.expect(lambda e: e.tag == q(CLIENT_NS, "presence")
                            and e.get("type") == "unavailable"
                            and e.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'destroy')}")
                            is not None, what="destroy notice")
    assert gone.get("from") == f"{room}/bob"
    assert room not in await disco_rooms(bob)
    listed = await api(server, "GET", "/api/rooms", token=admin)
    assert all(r["jid"] != room for r in listed.json["rooms"]), listed
    again = await api(server, "DELETE", f"/api/rooms/{room}", token=admin)
    assert again.status == 404, again
    # Persistent by default: a room made over the API survives a restart.
    await api(server, "POST", "/api/rooms", {"jid": f"keep@{MUC}", "owner": "alice@localhost"},
              token=admin)
    await bob.close()
    server.restart()
    listed = await api(server, "GET", "/api/rooms", token=admin)
    assert [r["jid"] for r in listed.json["rooms"]] == [f"keep@{MUC}"], listed


@async_test()
async def test_statistics(make_server):
    server = make_server(**ADMIN_HTTP)
    alice = await login(server, "alice")
    await login(server, "alice", resource="second")
    stats = await api(server, "GET", "/api/stats", token=token(server, "read"))
    assert stats.status == 200, stats
    s = stats.json
    assert (s["accounts"], s["online_sessions"], s["online_users"], s["rooms"]) == (3, 2, 1, 0), s
    assert s["uptime_secs"] >= 0 and s["memory_bytes"] > 1_000_000, s
    await alice.close()


def metrics(server) -> dict[str, float]:
    got = call(server, "GET", "/metrics")
    assert got.status == 200, got
    assert got.headers["Content-Type"].startswith("text/plain; version=0.0.4"), got.headers
    samples = {}
    for line in got.raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def total(samples: dict[str, float], prefix: str, *having: str) -> float:
    return sum(v for k, v in samples.items()
               if k.startswith(prefix) and all(h in k for h in having))


@async_test()
async def test_metrics_count_logins_and_a_message(make_server):
    server = make_server(**ADMIN_HTTP)
    before = metrics(server)
    assert before['xmppd_sessions{transport="tcp"}'] == 0, before
    alice = await login(server, "alice")
    bob = await login(server, "bob", direct_tls=True)
    assert not await can_login(server, "carol", password="wrong")
    alice.chat("bob@localhost", "counted")
    await bob.expect_message("counted", "alice@localhost")
    after = metrics(server)

    def delta(name: str) -> float:
        return after[name] - before[name]

    assert after['xmppd_sessions{transport="tcp"}'] == 1, after
    assert after['xmppd_sessions{transport="tls"}'] == 1, after
    assert total(after, "xmppd_auth_total", 'result="success"') - total(
        before, "xmppd_auth_total", 'result="success"') == 2
    assert total(after, "xmppd_auth_total", 'result="failure"') - total(
        before, "xmppd_auth_total", 'result="failure"') >= 1
    assert delta('xmppd_stanzas_in_total{kind="message"}') == 1, after
    assert delta('xmppd_stanzas_out_total{kind="message"}') == 1, after
    assert delta('xmppd_stanzas_in_total{kind="iq"}') >= 2, after
    # Logins record sessions: storage committed something, timed.
    assert delta("xmppd_storage_commit_seconds_count") >= 1, after
    assert after['xmppd_storage_commit_seconds_bucket{le="+Inf"}'] == after[
        "xmppd_storage_commit_seconds_count"]
    await alice.close()
    await bob.close()
    # Only reading.
    assert call(server, "POST", "/metrics", {}).status == 405
