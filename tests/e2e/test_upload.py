"""HTTP file upload (XEP-0363) on upload.localhost: slots through slixmpp's XEP-0363 plugin
and raw requests, uploads and downloads over HTTP with aiohttp.

Alice uploads through slixmpp (service discovery, the max-file-size form, a slot, the PUT);
Bob downloads what she uploaded, whole, by ranges and by HEAD. Slot requests that are too
large, over the quota or badly named are refused as XEP-0363 §5 says; PUTs with the wrong
length, type or signature, to an expired URL or to a used slot are refused; files expire
through the background job, survive a restart, and web clients get their CORS answers.
"""

from __future__ import annotations

import asyncio
import os
import time
import urllib.parse
import xml.etree.ElementTree as ET
from xml.sax.saxutils import quoteattr

import aiohttp

from clients import async_test, login, q
from raw import stanza_error_condition

NS = "urn:xmpp:http:upload:0"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MAX = 4 << 20


def upload_config(**extra) -> dict:
    # A body limit far below the file sizes: uploads are streamed past it.
    return {
        "http": {"enabled": True, "listen": ["127.0.0.1:0"], "max_body_bytes": 65536},
        "upload": {"enabled": True, "max_file_bytes": MAX, **extra},
    }


def upload_server(make_server, **extra):
    return make_server(**upload_config(**extra))


def local_url(server, url: str) -> str:
    """``url`` on the server's current HTTP port (a restart binds a new one) and address."""
    parts = urllib.parse.urlsplit(url)
    return parts._replace(netloc=f"127.0.0.1:{server.http_port}").geturl()


async def request_slot(client, filename: str, size: int, ctype: str | None = None):
    """A raw slot request; returns (put URL, get URL) or the error reply."""
    attrs = f"filename={quoteattr(filename)} size='{size}'"
    if ctype:
        attrs += f" content-type={quoteattr(ctype)}"
    reply = await client.iq("get", f"<request xmlns='{NS}' {attrs}/>",
                            to=f"upload.{client.boundjid.domain}")
    slot = reply.find(q(NS, "slot"))
    if slot is None:
        return reply
    return slot.find(q(NS, "put")).get("url"), slot.find(q(NS, "get")).get("url")


def error_text(reply: ET.Element) -> str:
    return reply.findtext(f"{q('jabber:client', 'error')}/{q(STANZAS_NS, 'text')}") or ""


async def put(server, url: str, data: bytes, ctype: str | None = None, **headers):
    headers = {**({"Content-Type": ctype} if ctype else {}), **headers}
    async with aiohttp.ClientSession() as http:
        async with http.put(local_url(server, url), data=data, headers=headers) as resp:
            return resp.status, await resp.text()


async def get(server, url: str, method: str = "GET", **headers):
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        async with http.request(method, local_url(server, url), headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


async def uploader(server, user: str = "alice"):
    return await login(server, user, setup=lambda c: c.register_plugin("xep_0363"))


@async_test(timeout=120.0)
async def test_a_file_uploaded_through_slixmpp_downloads_whole_and_by_ranges(make_server,
                                                                             tmp_path):
    server = upload_server(make_server)
    alice = await uploader(server)
    # Larger than http.max_body_bytes: the upload path streams.
    data = os.urandom(300_000)
    path = tmp_path / "très cool.png"
    path.write_bytes(data)
    get_url = await alice.plugin["xep_0363"].upload_file(path, timeout=20)
    plugin = alice.plugin["xep_0363"]
    assert str(plugin.upload_service) == "upload.localhost"
    assert int(plugin.max_file_size) == MAX, "the max-file-size form of disco#info"
    assert get_url.startswith(f"http://localhost:{server.http_port}/upload/")
    assert get_url.endswith("/tr%C3%A8s%20cool.png")

    bob = await login(server, "bob")
    status, headers, body = await get(server, get_url)
    assert status == 200 and body == data
    assert headers["Content-Type"] == "image/png"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["Content-Disposition"] == "inline; filename*=UTF-8''tr%C3%A8s%20cool.png"
    assert headers["Accept-Ranges"] == "bytes"

    status, headers, body = await get(server, get_url, Range="bytes=1000-1999")
    assert (status, body) == (206, data[1000:2000])
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    status, _, body = await get(server, get_url, Range="bytes=-10")
    assert (status, body) == (206, data[-10:])
    status, headers, _ = await get(server, get_url, Range=f"bytes={len(data)}-")
    assert status == 416 and headers["Content-Range"] == f"bytes */{len(data)}"
    status, headers, body = await get(server, get_url, "HEAD")
    assert (status, body, headers["Content-Length"]) == (200, b"", str(len(data)))
    # Another name under the same id is not the file.
    status, _, _ = await get(server, get_url.rsplit("/", 1)[0] + "/other.png")
    assert status == 404
    # The access log shows that files were uploaded and downloaded, never their links: whoever
    # reads the log could fetch them.
    slot_id = get_url.split("/upload/", 1)[1].split("/", 1)[0]
    access = [line for line in server.output().splitlines() if "xmppd_http::access" in line]
    assert any('path="/upload/…"' in line and "method=PUT" in line for line in access), access
    assert any('path="/upload/…"' in line and "method=GET" in line for line in access), access
    assert not [line for line in access if slot_id in line or "cool" in line], access
    await bob.close()
    await alice.close()


@async_test()
async def test_active_content_is_downloaded_not_rendered(make_server):
    server = upload_server(make_server)
    alice = await uploader(server)
    page = b"<script>alert(1)</script>"
    put_url, get_url = await request_slot(alice, "page.html", len(page), "text/html")
    assert (await put(server, put_url, page, "text/html"))[0] == 201
    status, headers, body = await get(server, get_url)
    assert (status, body) == (200, page)
    assert headers["Content-Disposition"].startswith("attachment;")
    assert "sandbox" in headers["Content-Security-Policy"]
    await alice.close()


@async_test()
async def test_slot_requests_are_refused_as_xep_0363_says(make_server):
    server = upload_server(make_server, quota_bytes_per_user=1000)
    alice = await uploader(server)

    reply = await request_slot(alice, "big.bin", MAX + 1)
    assert stanza_error_condition(reply) == "not-acceptable", ET.tostring(reply)
    too_large = reply.find(f"{q('jabber:client', 'error')}/{q(NS, 'file-too-large')}")
    assert too_large is not None, ET.tostring(reply)
    assert too_large.findtext(q(NS, "max-file-size")) == str(MAX)
    assert str(MAX) in error_text(reply)

    for name, size in [("a/b.txt", 10), ("", 10), ("..", 10), ("ok.txt", 0)]:
        reply = await request_slot(alice, name, size)
        assert stanza_error_condition(reply) == "bad-request", (name, size)
    reply = await request_slot(alice, "x.txt", 10, "not a type")
    assert stanza_error_condition(reply) == "bad-request"

    # The quota counts slots handed out, uploaded or not.
    assert isinstance(await request_slot(alice, "one.bin", 600), tuple)
    reply = await request_slot(alice, "two.bin", 600)
    assert stanza_error_condition(reply) == "resource-constraint"
    assert reply.find(q("jabber:client", "error")).get("type") == "wait"
    assert "Quota exceeded" in error_text(reply) and "1000" in error_text(reply)
    # Another account has its own.
    bob = await login(server, "bob")
    assert isinstance(await request_slot(bob, "two.bin", 600), tuple)

    # The service is listed by the server and describes itself.
    items = await alice.iq("get", "<query xmlns='http://jabber.org/protocol/disco#items'/>",
                           to="localhost")
    jids = [i.get("jid") for i in items.iter(q("http://jabber.org/protocol/disco#items", "item"))]
    assert "upload.localhost" in jids
    await bob.close()
    await alice.close()


@async_test()
async def test_puts_are_checked_against_their_slot(make_server):
    server = upload_server(make_server)
    alice = await uploader(server)
    data = b"x" * 5000
    put_url, get_url = await request_slot(alice, "f.txt", len(data), "text/plain")

    # The length must be the slot's, the type the slot's.
    status, text = await put(server, put_url, data[:-1], "text/plain")
    assert status == 400 and "5000" in text
    assert (await put(server, put_url, data, "text/html"))[0] == 400
    # A changed signature, a changed size or expiry in the URL.
    forged = put_url.replace("sig=", "sig=00")
    assert (await put(server, forged, data, "text/plain"))[0] == 403
    parts = urllib.parse.urlsplit(put_url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    later = parts._replace(query=urllib.parse.urlencode(
        {**query, "expires": str(int(query["expires"]) + 3600)})).geturl()
    assert (await put(server, later, data, "text/plain"))[0] == 403
    # Without a signature it is not an upload URL at all.
    assert (await put(server, get_url, data, "text/plain"))[0] == 403
    status, _, _ = await get(server, get_url)
    assert status == 404, "nothing is served before the upload"

    assert (await put(server, put_url, data, "text/plain"))[0] == 201
    status, text = await put(server, put_url, b"y" * 5000, "text/plain")
    assert status == 409, "a slot takes one upload"
    status, _, body = await get(server, get_url)
    assert (status, body) == (200, data)
    await alice.close()


@async_test()
async def test_an_expired_put_url_is_refused(make_server):
    server = upload_server(make_server, slot_lifetime_secs=1)
    alice = await uploader(server)
    put_url, _ = await request_slot(alice, "late.txt", 3, "text/plain")
    expires = int(dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(put_url).query))["expires"])
    # Waits for the clock to pass the URL's expiry, which the server reads from the same clock.
    while time.time() < expires + 1.5:
        await asyncio.sleep(0.2)
    status, text = await put(server, put_url, b"abc", "text/plain")
    assert status == 403 and "expired" in text
    await alice.close()


@async_test(timeout=120.0)
async def test_expired_files_are_deleted_and_kept_ones_survive_a_restart(make_server):
    # About two seconds of life, checked every second.
    server = upload_server(make_server, expire_days=0.00002, expire_interval_secs=1)
    alice = await uploader(server)
    put_url, get_url = await request_slot(alice, "soon.txt", 4, "text/plain")
    assert (await put(server, put_url, b"gone", "text/plain"))[0] == 201
    files = server.data_dir / "upload" / "files"
    assert len(list(files.iterdir())) == 1
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while (await get(server, get_url))[0] != 404:
        assert loop.time() < deadline, "the file outlived its expiry"
        await asyncio.sleep(0.5)
    assert list(files.iterdir()) == [], "the file is deleted from disk"
    await alice.close()

    server = upload_server(make_server)
    alice = await uploader(server)
    put_url, get_url = await request_slot(alice, "kept.bin", 70_000, "application/x-kept")
    data = os.urandom(70_000)
    assert (await put(server, put_url, data, "application/x-kept"))[0] == 201
    await alice.close()
    server.restart()
    status, headers, body = await get(server, get_url)
    assert (status, body) == (200, data)
    assert headers["Content-Disposition"].startswith("attachment;")


@async_test()
async def test_web_clients_get_cors_answers_for_allowed_origins(make_server):
    server = upload_server(make_server, cors_origins=["https://app.example"])
    alice = await uploader(server)
    put_url, get_url = await request_slot(alice, "c.txt", 2, "text/plain")
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "PUT",
                 "Access-Control-Request-Headers": "content-type"}
    status, headers, _ = await get(server, put_url, "OPTIONS", **preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "PUT" in headers["Access-Control-Allow-Methods"]
    assert "Content-Type" in headers["Access-Control-Allow-Headers"]
    status, _ = await put(server, put_url, b"hi", "text/plain", Origin="https://app.example")
    assert status == 201
    status, headers, _ = await get(server, get_url, Origin="https://app.example")
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "https://app.example"
    status, headers, _ = await get(server, get_url, Origin="https://evil.example")
    assert status == 200 and "Access-Control-Allow-Origin" not in headers
    await alice.close()


def test_upload_without_http_is_a_one_line_config_error(make_server):
    server = make_server(start=False, users=(), upload={"enabled": True})
    result = server.cli("check-config", check=False)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode != 0
    assert "upload.enabled" in output and "http.enabled" in output, output
    assert len(output.splitlines()) == 1, output


@async_test()
async def test_slots_for_an_external_service_carry_its_token(make_server):
    import hashlib
    import hmac

    secret = "shared with the upload service"
    server = make_server(upload={"enabled": True, "external_url": "https://up.example.org/share",
                                 "external_secret": secret})
    alice = await login(server, "alice")
    put_url, get_url = await request_slot(alice, "a b.png", 1234, "image/png")
    parts = urllib.parse.urlsplit(put_url)
    assert get_url == urllib.parse.urlunsplit(parts._replace(query=""))
    prefix = "/share/"
    assert parts.path.startswith(prefix) and get_url.endswith("/a%20b.png")
    path = urllib.parse.unquote(parts.path[len(prefix):])
    message = f"{path}\0{1234}\0image/png".encode()
    token = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert urllib.parse.parse_qs(parts.query) == {"v2": [token]}
    await alice.close()


@async_test()
async def test_an_accounts_files_go_with_the_account(make_server):
    server = upload_server(make_server)
    alice = await uploader(server)
    put_url, get_url = await request_slot(alice, "mine.txt", 4, "text/plain")
    assert (await put(server, put_url, b"mine", "text/plain"))[0] == 201
    bob = await uploader(server, "bob")
    put_url, bobs = await request_slot(bob, "his.txt", 3, "text/plain")
    assert (await put(server, put_url, b"his", "text/plain"))[0] == 201
    await alice.close()
    out = server.cli("unregister", "alice", "localhost").stdout
    assert "unregistered alice@localhost" in out, out
    assert (await get(server, get_url))[0] == 404
    assert len(list((server.data_dir / "upload" / "files").iterdir())) == 1
    assert (await get(server, bobs))[2] == b"his"
    await bob.close()
