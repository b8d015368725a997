"""The web admin (`/admin` on the administration listener) in Debian's chromium, driven by
Playwright as an administrator would use it: log in, create an account that then logs in over
XMPP (slixmpp), kick a session (the client sees its stream end), set the message of the day
(an online user gets it), destroy a room (its occupant is told), log out (the cookie no longer
works). Without a browser, through plain HTTP (http.client): a form posted without its CSRF
token or with a wrong one, or from another origin, is refused with 403 and changes nothing; a
non-administrator with the right password and a wrong password are refused; the configuration
page hides secrets; every answer carries the security headers; a room's page lists its
occupant (a slixmpp user) with nick, role, affiliation and real address, escaped; the uploads
page shows what a slixmpp user uploaded (XEP-0363), in bytes and files, against the quota and
the cap, and says so when upload is not configured."""

from __future__ import annotations

import asyncio
import http.client
import os
import pathlib
import re
import urllib.parse
import xml.etree.ElementTree as ET

from clients import CLIENT_NS, async_test, can_login, login, q
from conftest import PASSWORD

CHROMIUM = pathlib.Path("/usr/bin/chromium")
MUC = "conference.localhost"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
ADMIN = {"server": {"admins": ["alice@localhost"]},
         "admin_http": {"enabled": True, "listen": ["127.0.0.1:0"]}}
# Milliseconds, for Playwright: a safety net on a loaded machine, not a pace.
WAIT_MS = 60_000


def need_playwright():
    import pytest

    missing = [] if CHROMIUM.exists() else ["chromium (apt-get install chromium)"]
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -r tests/e2e/requirements.txt)")
    if missing:
        if os.environ.get("XMPPD_E2E_CI"):
            pytest.fail(f"missing for the web admin test: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


class Http:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, server) -> None:
        self.port = server.admin_http_port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None,
                headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = None if form is None else urllib.parse.urlencode(form)
        h = dict(headers or {})
        if form is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        resp = conn.getresponse()
        text = resp.read().decode()
        for c in resp.headers.get_all("Set-Cookie") or []:
            name, value = c.split(";", 1)[0].split("=", 1)
            if "Max-Age=0" in c:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value
        conn.close()
        return resp, text

    def login(self, jid: str, password: str = PASSWORD):
        resp, page = self.request("GET", "/admin/login")
        assert resp.status == 200, page
        return self.request("POST", "/admin/login",
                            {"csrf": csrf(page), "jid": jid, "password": password})


def csrf(page: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', page)
    assert m, page
    return m.group(1)


def is_body(text):
    return lambda e: (e.tag == q(CLIENT_NS, "message")
                      and e.findtext(q(CLIENT_NS, "body")) == text)


def stream_end(client) -> asyncio.Future:
    """Resolves with the condition of the stream error that ends ``client``'s stream."""
    ended = asyncio.get_running_loop().create_future()

    def seen(error) -> None:
        if not ended.done():
            ended.set_result(error["condition"])

    client.add_event_handler("stream_error", seen)
    return ended


async def join_room(client, room: str, nick: str) -> None:
    client.send_presence(pto=f"{room}/{nick}")
    await client.expect(lambda e: e.tag == q(CLIENT_NS, "presence")
                        and e.get("from") == f"{room}/{nick}" and e.get("type") is None,
                        what="self-presence")


@async_test(timeout=300)
async def test_an_administrator_works_in_the_browser(make_server, tmp_path):
    need_playwright()
    from playwright.async_api import async_playwright

    server = make_server(**ADMIN)
    base = f"http://127.0.0.1:{server.admin_http_port}"
    bob = await login(server, "bob")
    room = f"lobby@{MUC}"
    await join_room(bob, room, "bob")

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        context = await browser.new_context()
        page = await context.new_page()
        page.set_default_timeout(WAIT_MS)
        try:
            # Not logged in: the login form.
            await page.goto(base + "/admin/")
            assert page.url == base + "/admin/login", page.url
            await page.fill("input[name=jid]", "alice@localhost")
            await page.fill("input[name=password]", PASSWORD)
            await page.click("button:has-text('Log in')")
            await page.wait_for_url(base + "/admin/")
            assert await page.text_content("#accounts") == "3"
            assert await page.locator("figure.chart svg").count() == 2
            [cookie] = [c for c in await context.cookies() if c["name"] == "xmppd_admin"]
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict", cookie
            assert cookie["path"] == "/admin", cookie

            # A new account, which then logs in over XMPP.
            await page.click("nav >> text=Users")
            await page.fill("form[action='/admin/users/create'] input[name=jid]",
                            "dave@localhost")
            await page.fill("form[action='/admin/users/create'] input[name=password]",
                            "dave's password")
            await page.click("button:has-text('Create')")
            await page.wait_for_selector("text=Account dave@localhost created.")
            dave = await login(server, "dave", password="dave's password", resource="laptop")

            # Its session, kicked from its page: the client sees its stream end.
            ended = stream_end(dave)
            await page.goto(base + "/admin/user?jid=dave%40localhost")
            row = page.locator("tr", has=page.locator("td.resource", has_text="laptop"))
            await row.locator("button:has-text('Kick')").click()
            await page.wait_for_selector("text=1 session(s) ended.")
            assert await asyncio.wait_for(ended, 30) == "policy-violation"

            # The message of the day reaches the online user.
            await page.click("nav >> text=Announcements")
            motd = page.locator("form[action='/admin/motd']")
            await motd.locator("textarea[name=body]").fill("Maintenance <tonight> & more")
            await motd.locator("button:has-text('Set')").click()
            await page.wait_for_selector("text=Message of the day set")
            await bob.expect(is_body("Maintenance <tonight> & more"), what="the MOTD")
            assert await page.locator(".motd").text_content() == \
                "Now: Maintenance <tonight> & more"

            # The room, destroyed: its occupant is told (XEP-0045 §10.9).
            await page.click("nav >> text=Rooms")
            row = page.locator("tr", has=page.locator("td.room", has_text=room))
            await row.locator("input[name=confirm]").check()
            await row.locator("button:has-text('Destroy')").click()
            await page.wait_for_selector(f"text=Room {room} destroyed.")
            gone = await bob.expect(lambda e: e.tag == q(CLIENT_NS, "presence")
                                    and e.get("from") == f"{room}/bob"
                                    and e.get("type") == "unavailable", what="room's end")
            assert gone.find(f"{q(NS_MUC_USER, 'x')}/{q(NS_MUC_USER, 'destroy')}") is not None, \
                ET.tostring(gone)

            # Logout: the old cookie no longer opens anything.
            await page.click("button:has-text('Log out')")
            await page.wait_for_url(base + "/admin/login")
            old = Http(server)
            old.cookies["xmppd_admin"] = cookie["value"]
            resp, _ = old.request("GET", "/admin/users")
            assert resp.status == 303 and resp.headers["Location"] == "/admin/login"
        except Exception:
            await page.screenshot(path=str(tmp_path / "webadmin.png"))
            raise
        finally:
            await browser.close()
    await bob.close()


@async_test()
async def test_forms_without_their_csrf_token_change_nothing(make_server):
    server = make_server(**ADMIN)
    web = Http(server)
    resp, _ = web.login("alice@localhost")
    assert resp.status == 303 and "xmppd_admin" in web.cookies, resp.headers
    resp, page = web.request("GET", "/admin/users")
    assert resp.status == 200, page
    token = csrf(page)
    create = {"jid": "eve@localhost", "password": "eve's password"}
    resp, text = web.request("POST", "/admin/users/create", create)
    assert resp.status == 403, text
    resp, text = web.request("POST", "/admin/users/create", {**create, "csrf": token[:-2] + "AA"})
    assert resp.status == 403, text
    resp, text = web.request("POST", "/admin/users/create", {**create, "csrf": token},
                             headers={"Origin": "http://evil.example"})
    assert resp.status == 403, text
    resp, text = web.request("POST", "/admin/users/create", {**create, "csrf": token},
                             headers={"Referer": "http://evil.example/admin/users"})
    assert resp.status == 403, text
    assert not await can_login(server, "eve", password="eve's password")
    _, page = web.request("GET", "/admin/users")
    assert "eve@localhost" not in page
    # Logout needs its token too.
    resp, _ = web.request("POST", "/admin/logout", {})
    assert resp.status == 403
    # With it, the same form works (so the refusals above were the token's).
    resp, _ = web.request("POST", "/admin/users/create", {**create, "csrf": token})
    assert resp.status == 303
    assert await can_login(server, "eve", password="eve's password")
    # Without a session, nothing is done either.
    stranger = Http(server)
    resp, _ = stranger.request("POST", "/admin/users/delete",
                               {"jid": "eve@localhost", "confirm": "yes", "csrf": token})
    assert resp.status == 403
    assert await can_login(server, "eve", password="eve's password")


@async_test()
async def test_non_admins_and_wrong_passwords_are_refused(make_server):
    server = make_server(**ADMIN)
    for jid, password in (("bob@localhost", PASSWORD), ("alice@localhost", "wrong"),
                          ("nobody@localhost", PASSWORD), ("alice@elsewhere", PASSWORD)):
        web = Http(server)
        resp, page = web.login(jid, password)
        assert resp.status == 403, (jid, page)
        assert "xmppd_admin" not in web.cookies, (jid, web.cookies)
        resp, _ = web.request("GET", "/admin/")
        assert resp.status == 303 and resp.headers["Location"] == "/admin/login"
    # The login form's own token is checked too.
    web = Http(server)
    web.request("GET", "/admin/login")
    resp, _ = web.request("POST", "/admin/login",
                          {"csrf": "forged", "jid": "alice@localhost", "password": PASSWORD})
    assert resp.status == 403 and "xmppd_admin" not in web.cookies
    # A disabled administrator is refused.
    web = Http(server)
    assert web.login("alice@localhost")[0].status == 303
    _, page = web.request("GET", "/admin/user?jid=alice%40localhost")
    resp, _ = web.request("POST", "/admin/users/disable",
                          {"jid": "alice@localhost", "csrf": csrf(page)})
    assert resp.status == 303
    resp, _ = web.request("GET", "/admin/")
    assert resp.status == 303, "disabling the account ended its web sessions"
    assert Http(server).login("alice@localhost")[0].status == 403


@async_test()
async def test_the_configuration_hides_secrets_and_answers_carry_security_headers(make_server):
    secret = "upload-signing-key-4b1d"
    server = make_server(upload={"secret": secret}, **ADMIN)
    web = Http(server)
    resp, login_page = web.login("alice@localhost")
    assert resp.status == 303
    resp, page = web.request("GET", "/admin/config")
    assert resp.status == 200, page
    assert "admin_http" in page and "alice@localhost" in page, page
    assert secret not in page and "(hidden)" in page, page
    for path in ("/admin/", "/admin/config", "/admin/login", "/admin/style.css"):
        resp, _ = web.request("GET", path)
        csp = resp.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in csp and "script-src" not in csp, csp
        assert "default-src 'none'" in csp, csp
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Cache-Control"] == "no-store"


@async_test()
async def test_a_room_page_lists_its_occupants_with_their_real_addresses(make_server):
    server = make_server(**ADMIN)
    bob = await login(server, "bob", resource="desk")
    room = f"lobby@{MUC}"
    nick = "<b>ob & co"
    await join_room(bob, room, nick)
    web = Http(server)
    assert web.login("alice@localhost")[0].status == 303
    resp, page = web.request("GET", "/admin/rooms")
    assert resp.status == 200 and f'href="room?jid=lobby%40{MUC}"' in page, page
    resp, page = web.request("GET", "/admin/room?" + urllib.parse.urlencode({"jid": room}))
    assert resp.status == 200, page
    row = re.search(r'<td class="nick">([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>'
                    r'<td><a [^>]*>([^<]*)</a></td><td>([^<]*)</td>', page)
    assert row, page
    assert row.groups() == ("&lt;b&gt;ob &amp; co", "moderator", "owner", "bob@localhost",
                            "desk"), page
    assert "<b>ob" not in page
    # What names nothing here is not found; what is no address is a bad request.
    resp, page = web.request("GET", "/admin/room?jid=nowhere%40" + MUC)
    assert resp.status == 404 and "no room nowhere@" in page, page
    resp, page = web.request("GET", "/admin/room?jid=lobby%40elsewhere.example")
    assert resp.status == 404 and "not a chat service" in page, page
    resp, page = web.request("GET", "/admin/user?jid=nobody%40localhost")
    assert resp.status == 404 and "no account nobody@localhost" in page, page
    resp, page = web.request("GET", "/admin/user?jid=%40%40")
    assert resp.status == 400, page
    await bob.close()


@async_test(timeout=120)
async def test_the_uploads_page_shows_what_each_account_holds(make_server, tmp_path):
    from test_upload import upload_config, uploader

    config = upload_config(quota_bytes_per_user=1 << 20, max_total_bytes=8 << 20)
    server = make_server(**ADMIN, **config)
    bob = await uploader(server, "bob")
    path = tmp_path / "note.txt"
    path.write_bytes(b"x" * 1234)
    await bob.plugin["xep_0363"].upload_file(path, timeout=20)
    web = Http(server)
    assert web.login("alice@localhost")[0].status == 303
    resp, page = web.request("GET", "/admin/uploads")
    assert resp.status == 200, page
    assert '<td id="upload-quota">1.0 MiB</td>' in page, page
    assert '<td id="upload-cap">8.0 MiB</td>' in page, page
    row = re.search(r'<td class="owner"><a [^>]*>bob@localhost</a></td>'
                    r'<td class="bytes"[^>]*>(\d+)</td><td class="files">(\d+)</td>', page)
    assert row and row.groups() == ("1234", "1"), page
    await bob.close()


@async_test()
async def test_the_uploads_page_says_when_upload_is_off(make_server):
    server = make_server(**ADMIN)
    web = Http(server)
    assert web.login("alice@localhost")[0].status == 303
    resp, page = web.request("GET", "/admin/uploads")
    assert resp.status == 200 and "HTTP file upload is not configured" in page, page
