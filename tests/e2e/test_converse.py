"""A real web client: converse.js (from tests/node) in Debian's chromium, driven by Playwright.

The test serves a static page (tests/e2e/web/converse.html, and converse.js's dist/) from its
own HTTP server on another origin than xmppd's, which allows that origin for WebSocket and
BOSH. converse.js finds the endpoint through host-meta (XEP-0156): it asks
``https://localhost/.well-known/host-meta``, which the browser is made to fetch from xmppd's
HTTPS listener (the only rewrite: the well-known port 443 is not ours to take). Then it logs
in, over WebSocket, and in a second run over BOSH (WebSocket off, so host-meta names only
BOSH), and exchanges messages with a slixmpp user both ways, checked in the page's DOM and in
slixmpp.

The browser is Debian's chromium (installed by ``cargo xtask ci``); Playwright never
downloads one. Under CI (``XMPPD_E2E_CI``) a missing chromium or Playwright is a failure.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import pathlib
import threading

import pytest

from clients import async_test, login
from conftest import PASSWORD, ROOT

CHROMIUM = pathlib.Path("/usr/bin/chromium")
DIST = ROOT / "tests" / "node" / "node_modules" / "converse.js" / "dist"
PAGE = pathlib.Path(__file__).parent / "web" / "converse.html"
# Milliseconds, for Playwright: a safety net on a loaded machine, not a pace.
WAIT_MS = 90_000


def need_browser():
    missing = [what for what, ok in (
        ("chromium (apt-get install chromium)", CHROMIUM.exists()),
        ("converse.js (npm ci --prefix tests/node)", DIST.joinpath("converse.min.js").exists()),
    ) if not ok]
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -r tests/e2e/requirements.txt)")
    if missing:
        if os.environ.get("XMPPD_E2E_CI"):
            pytest.fail(f"missing for the web client test: {', '.join(missing)}")
        pytest.skip(f"missing: {', '.join(missing)}")


class PageHandler(http.server.SimpleHTTPRequestHandler):
    """The test page at / and converse.js's dist/ under /dist/."""

    def translate_path(self, path: str) -> str:
        path = path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            return str(PAGE)
        if path.startswith("/dist/"):
            return str(DIST / path[len("/dist/"):])
        return str(DIST / "missing")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def page_origin():
    handler = functools.partial(PageHandler, directory=str(DIST))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


async def converse_chat(server, origin: str, transport: str, shot: pathlib.Path) -> None:
    from playwright.async_api import async_playwright

    bob = await login(server, "bob")
    host_meta = f"https://127.0.0.1:{server.https_port}/.well-known/host-meta"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            context = await browser.new_context(ignore_https_errors=True)
            page = await context.new_page()
            console: list[str] = []
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))

            async def from_xmppd(route):
                response = await route.fetch(url=host_meta)
                await route.fulfill(response=response)

            await page.route("https://localhost/.well-known/host-meta*", from_xmppd)
            await page.add_init_script(
                f"window.E2E = {json.dumps({'jid': server.jid('alice'), 'password': PASSWORD})};")
            await page.goto(origin + "/")
            try:
                await page.wait_for_function("window.e2e && window.e2e.connected",
                                             timeout=WAIT_MS)
            except Exception:
                raise AssertionError("converse.js did not connect:\n" +
                                     "\n".join(console[-40:])) from None
            service = await page.evaluate("window.e2e.service")
            if transport == "websocket":
                assert service == f"wss://127.0.0.1:{server.https_port}/xmpp-websocket", service
            else:
                assert service == f"https://127.0.0.1:{server.https_port}/http-bind", service

            try:
                await chat(page, server, bob, transport)
            except Exception as e:
                await page.screenshot(path=str(shot))
                raise AssertionError(
                    f"{e}; the page: {shot}; its console:\n" + "\n".join(console[-40:])) from e
        finally:
            await browser.close()
    await bob.close()


async def chat(page, server, bob, transport: str) -> None:
    """Alice writes to bob in converse.js's chat box; bob answers, and it shows there."""
    await page.evaluate(f"window.e2e.api.chats.open('{server.jid('bob')}')")
    textarea = page.locator(".chat-textarea")
    await textarea.wait_for(timeout=WAIT_MS)
    await textarea.fill(f"hello from converse over {transport}")
    await textarea.press("Enter")
    await bob.expect_message(f"hello from converse over {transport}", server.jid("alice"),
                             timeout=WAIT_MS / 1000)
    # Bob answers; it shows in her chat box.
    bob.chat(server.jid("alice"), f"hello from slixmpp over {transport}")
    theirs = page.locator(".chat-msg__text", has_text=f"hello from slixmpp over {transport}")
    await theirs.first.wait_for(timeout=WAIT_MS)
    mine = page.locator(".chat-msg__text", has_text=f"hello from converse over {transport}")
    assert await mine.count() >= 1


@async_test(timeout=240)
async def test_converse_over_websocket(make_server, page_origin, tmp_path):
    need_browser()
    server = make_server(http={
        "enabled": True, "listen": [], "tls_listen": ["127.0.0.1:0"],
        "websocket_origins": [page_origin], "bosh_origins": [page_origin]})
    await converse_chat(server, page_origin, "websocket", tmp_path / "websocket.png")


@async_test(timeout=240)
async def test_converse_over_bosh(make_server, page_origin, tmp_path):
    need_browser()
    server = make_server(http={
        "enabled": True, "listen": [], "tls_listen": ["127.0.0.1:0"], "websocket": False,
        "bosh_origins": [page_origin]})
    await converse_chat(server, page_origin, "bosh", tmp_path / "bosh.png")
