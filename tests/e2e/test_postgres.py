"""``[storage] backend = "postgres"``: the accounts, rosters and offline messages of the core
in a real PostgreSQL, through real clients (slixmpp), across a restart of xmppd and an outage of
the database; so are the services' stores: block lists, upload slots, FAST tokens, API tokens,
the message archive, personal eventing nodes, vCards and private XML (docs/STORAGE.md)."""

import asyncio
import base64
import hashlib
import sqlite3
import xml.etree.ElementTree as ET

import pytest
from slixmpp.exceptions import IqError

from clients import async_test, can_login, is_message, login, q, settled, stanza_error
from conftest import PASSWORD as XMPP_PASSWORD
from postgres_fixture import PASSWORD, postgres  # noqa: F401
from test_blocking import blocker, is_error_from
from test_ldap import tls_stream
from test_sasl2 import SASL2_NS, condition, fast_login, plain_login_with_token
from test_upload import get, upload_config, uploader
from raw import SASL_NS
from test_pep import A, contacts, event_items, item_ids, items_of, pep_client, PUBSUB_EVENT

AVATAR_METADATA = "urn:xmpp:avatar:metadata"
VCARD = "vcard-temp"
PRIVATE = "jabber:iq:private"
IMAGE = b"\x89PNG\r\n\x1a\n kept on the database server"
IMAGE_HASH = hashlib.sha1(IMAGE).hexdigest()


def pg_storage(pg, **extra) -> dict:
    return {"backend": "postgres", "url": pg.url, **extra}


def plain_failure(server, user: str, password: str) -> list[str]:
    reply = tls_stream(server, server.domain).auth_plain(user, password)
    if reply.tag == f"{{{SASL_NS}}}success":
        return []
    return [c.tag.split("}", 1)[1] for c in reply if not c.tag.endswith("}text")]


@async_test()
async def test_accounts_roster_and_offline_messages_live_in_postgresql(
        make_server, postgres, tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text(PASSWORD + "\n")
    # The CLI registers alice, bob and carol in PostgreSQL.
    server = make_server(storage=pg_storage(postgres, password_file=str(secret)))
    assert postgres.psql("SELECT username FROM users ORDER BY username").split() == \
        ["alice", "bob", "carol"]

    alice = await login(server, "alice")
    await alice.update_roster("bob@localhost", name="Bobby", groups=["friends"])
    alice.chat("bob@localhost", "kept in postgres")
    await settled(alice)
    assert postgres.psql("SELECT count(*) FROM offline").strip() == "1"
    await alice.close()

    server.restart()
    bob = await login(server, "bob")
    await bob.expect_message("kept in postgres", "alice@localhost")
    alice = await login(server, "alice")
    item = alice.client_roster["bob@localhost"]
    assert (item["name"], item["groups"]) == ("Bobby", ["friends"])

    # None of it is in the SQLite file the services use.
    with sqlite3.connect(server.data_dir / "xmppd.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if "users" in tables:
            assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    assert PASSWORD not in server.output()


@async_test()
async def test_a_database_outage_gives_temporary_errors_and_the_server_recovers(
        make_server, postgres, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(
        storage=pg_storage(postgres, connect_timeout_secs=2, pool_wait_secs=2))
    await outage_gives_temporary_errors_and_recovers(server, postgres, PASSWORD)


@async_test(timeout=120.0)
async def test_block_lists_uploads_and_tokens_live_in_postgresql(make_server, postgres,
                                                                 monkeypatch, tmp_path):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=pg_storage(postgres), **upload_config())
    await service_stores_live_on_the_database(server, postgres.psql, tmp_path)


@async_test(timeout=150.0)
async def test_the_message_archive_lives_in_postgresql(make_server, postgres, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=pg_storage(postgres))
    await archive_round_trip(server, lambda sql: postgres.psql(sql))


async def archive_round_trip(server, sql) -> None:
    """Messages archived on the database server (``sql`` runs a query there), paged forward
    and backward with slixmpp's XEP-0313 plugin, found by a full-text query, and all there
    again after xmppd restarts; none of it in the SQLite file beside it."""
    from test_mam import bodies, fin, iterate, mam_client, query

    alice = await login(server, "alice")
    bob = await mam_client(server, "bob")
    sent = [f"message {i} about {'the harbour' if i % 5 == 0 else 'nothing'}" for i in range(12)]
    for text in sent:
        alice.chat("bob@localhost", text)
    await bob.expect_message(sent[-1])
    await settled(alice)
    # Both sides of the conversation, each in its owner's archive.
    assert sql("SELECT count(*) FROM mam_messages").strip() == "24"

    assert await iterate(bob, max_=5) == sent
    assert await iterate(bob, max_=5, reverse=True) == list(reversed(sent))
    reply, results = await query(bob, rsm="<max>3</max><before/>")
    assert bodies(results) == sent[-3:] and fin(reply).get("complete") in (None, "false")
    harbour = [t for t in sent if "harbour" in t]
    reply, results = await query(bob, fields={"fulltext": "HARBOUR the"})
    assert reply.get("type") == "result" and bodies(results) == harbour
    reply, results = await query(bob, fields={"fulltext": "harbour", "with": "carol@localhost"})
    assert bodies(results) == []
    await alice.close()
    await bob.close()

    server.restart()
    bob = await mam_client(server, "bob")
    assert await iterate(bob, max_=5) == sent
    _, results = await query(bob, fields={"fulltext": "harbour"})
    assert bodies(results) == harbour
    alice = await mam_client(server, "alice")
    assert await iterate(alice, max_=50) == sent
    with sqlite3.connect(server.data_dir / "xmppd.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if "mam_messages" in tables:
            assert db.execute("SELECT count(*) FROM mam_messages").fetchone()[0] == 0


@async_test(timeout=120)
async def test_pep_items_vcards_and_private_xml_live_in_postgresql(make_server, postgres,
                                                                   monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=pg_storage(postgres))
    await pep_vcard_and_private_xml_survive_a_restart(server, postgres.psql)


def test_a_password_in_the_url_is_refused_with_a_one_line_error(make_server):
    password_in_url_is_refused(make_server, "postgres", "postgres://xmppd:hunter2@127.0.0.1/xmppd")


def test_an_unreachable_database_stops_the_start_with_a_clear_error(make_server, tmp_path):
    unreachable_database_stops_the_start(
        make_server, tmp_path, "postgres", "postgres://xmppd@127.0.0.1:1/xmppd", "PostgreSQL")


async def outage_gives_temporary_errors_and_recovers(server, db, password: str) -> None:
    """With ``db`` (a fixture's server with ``stop`` and ``start``) going away under a running
    ``server``: logins fail with a temporary failure, writes with ``wait`` errors, and both
    work again once it is back, without a restart."""
    alice = await login(server, "alice")
    db.stop()
    # A login cannot be checked: a temporary failure (RFC 6120 §6.5.13), not a wrong password.
    assert plain_failure(server, "bob", XMPP_PASSWORD) == ["temporary-auth-failure"]
    # A roster change cannot be stored: refused, to be retried (type wait).
    with pytest.raises(IqError) as refused:
        await alice.update_roster("carol@localhost", name="C")
    assert refused.value.iq["error"]["type"] == "wait"
    assert refused.value.iq["error"]["condition"] == "internal-server-error"
    # A message to an offline contact cannot be stored: bounced, to be retried (type wait).
    alice.send_message(mto="carol@localhost", mbody="during the outage", mtype="chat")
    bounce = await alice.expect(lambda e: is_message(e) and e.get("type") == "error",
                                what="the bounce of a message that could not be stored")
    assert stanza_error(bounce) == "internal-server-error"
    assert bounce.find(q("jabber:client", "error")).get("type") == "wait"

    db.start()
    # The same server serves again, without a restart.
    assert await can_login(server, "bob")
    await alice.update_roster("carol@localhost", name="C")
    alice.send_message(mto="carol@localhost", mbody="after the outage", mtype="chat")
    carol = await login(server, "carol")
    await carol.expect_message("after the outage", "alice@localhost")
    assert server.running
    assert password not in server.output()


async def pep_vcard_and_private_xml_survive_a_restart(server, sql) -> None:
    """On ``server``, whose storage is a database server that ``sql(query)`` queries: avatar
    metadata published with slixmpp's XEP-0084 plugin reaches a contact, and it, a vCard set
    with the XEP-0054 plugin and a private XML element are stored there (not in the SQLite
    file) and still served after a restart of xmppd."""
    alice = await pep_client(server, "alice", extra=("xep_0054", "xep_0084"))
    bob = await pep_client(server, "bob", notify=[AVATAR_METADATA])
    await contacts(alice, bob)

    vcard = alice.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice Liddell ✓"
    await alice.plugin["xep_0054"].publish_vcard(vcard, jid=A)
    prefs = "<prefs xmlns='urn:test:prefs'><colour>teal ✓</colour></prefs>"
    reply = await alice.iq("set", f"<query xmlns='{PRIVATE}'>{prefs}</query>")
    assert reply.get("type") == "result", ET.tostring(reply)
    avatar = alice.plugin["xep_0084"]
    await avatar.publish_avatar(IMAGE)
    await avatar.publish_avatar_metadata(
        [{"id": IMAGE_HASH, "type": "image/png", "bytes": len(IMAGE)}])
    event = await bob.expect(event_items(AVATAR_METADATA), what="the avatar metadata event")
    assert event.find(f".//{{{PUBSUB_EVENT}}}item").get("id") == IMAGE_HASH

    count = lambda query: int(sql(query).strip())  # noqa: E731
    assert count("SELECT count(*) FROM pubsub_items WHERE owner = 'alice@localhost'") == 2
    assert count("SELECT count(*) FROM personal_vcards WHERE domain = 'localhost'") == 1
    assert count("SELECT count(*) FROM personal_private "
                 "WHERE namespace = 'urn:test:prefs'") == 1
    with sqlite3.connect(server.data_dir / "xmppd.sqlite") as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
    assert not tables & {"pubsub_items", "pubsub_nodes", "personal_vcards", "personal_private"}
    await alice.close()
    await bob.close()

    server.restart()
    bob = await pep_client(server, "bob")
    reply = await items_of(bob, A, AVATAR_METADATA)
    assert item_ids(reply) == [IMAGE_HASH]
    assert reply.find(f".//{{{AVATAR_METADATA}}}info").get("bytes") == str(len(IMAGE))
    reply = await bob.iq("get", f"<vCard xmlns='{VCARD}'/>", to=A)
    assert reply.findtext(f".//{{{VCARD}}}FN") == "Alice Liddell ✓", ET.tostring(reply)
    # XEP-0398: the avatar became the vCard's photo, kept with the rest of it.
    binval = reply.findtext(f".//{{{VCARD}}}PHOTO/{{{VCARD}}}BINVAL")
    assert binval and base64.b64decode(binval) == IMAGE, ET.tostring(reply)
    alice = await login(server, "alice")
    reply = await alice.iq("get", f"<query xmlns='{PRIVATE}'><prefs xmlns='urn:test:prefs'/>"
                                  "</query>")
    assert reply.findtext(".//{urn:test:prefs}colour") == "teal ✓", ET.tostring(reply)


def password_in_url_is_refused(make_server, backend: str, url: str) -> None:
    server = make_server(start=False, users=(), storage={"backend": backend, "url": url})
    result = server.cli("check-config", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "storage.url" in output and "password" in output, output
    assert "hunter2" not in output
    assert len(output.strip().splitlines()) == 1, output


def unreachable_database_stops_the_start(make_server, tmp_path, backend: str, url: str,
                                         engine: str) -> None:
    secret = tmp_path / "db-password"
    secret.write_text("not-shown-secret")
    server = make_server(start=False, users=(), storage={
        "backend": backend, "url": url, "password_file": str(secret),
        "connect_timeout_secs": 2})
    result = server.cli("users", "list", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert engine in output and "127.0.0.1:1" in output, output
    assert "not-shown-secret" not in output


def sqlite_rows(server, table: str) -> int:
    """The rows of ``table`` in the SQLite file beside the database server (none if absent)."""
    with sqlite3.connect(server.config["storage"]["sqlite_path"]) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] if table in tables else 0


async def service_stores_live_on_the_database(server, sql, tmp_path) -> None:
    """On a ``server`` whose storage is a database server that ``sql`` queries: a block list
    set by slixmpp survives a restart, an upload slot is PUT and downloaded, a FAST token logs
    in and a password change revokes it, an API token made by the command line is kept; each
    in the database server's tables, none in the SQLite file beside it."""
    def count(table: str) -> int:
        return int(sql(f"SELECT count(*) FROM {table}").strip())

    # A block list, across a restart.
    alice = await blocker(server, "alice")
    await alice.plugin["xep_0191"].block(["bob@localhost", "spam.example"])
    await alice.close()
    assert count("blocking_items") == 2
    server.restart()
    alice = await blocker(server, "alice")
    blocked = {str(j) for j in await alice.plugin["xep_0191"].get_blocked_jids()}
    assert blocked == {"bob@localhost", "spam.example"}
    bob = await login(server, "bob")
    bob.chat("alice@localhost", "after the restart")
    bounce = await bob.expect(is_error_from("message", "alice@localhost"),
                              what="bounce from alice")
    assert stanza_error(bounce) == "service-unavailable"
    await alice.close()

    # An upload slot, its PUT and a GET (the slot is read back from the database).
    carol = await uploader(server, "carol")
    data = bytes(range(256)) * 1000
    path = tmp_path / "kept.bin"
    path.write_bytes(data)
    get_url = await carol.plugin["xep_0363"].upload_file(path, timeout=20)
    status, _, body = await get(server, get_url)
    assert status == 200 and body == data
    assert sql("SELECT CONCAT(owner, '|', size, '|', state) FROM upload_slots").split() == \
        [f"carol@localhost|{len(data)}|2"]
    assert count("upload_secret") == 1
    await carol.close()

    # A FAST token: issued at a SASL2 login, logs in, revoked by a password change (a trigger
    # on the database's own accounts table).
    ua_id = "e2e-fast-on-a-database-server"
    first, _, token = await asyncio.to_thread(plain_login_with_token, server, ua_id)
    first.close()
    assert count("fast_tokens") == 1
    fast, success = await asyncio.to_thread(fast_login, server, "alice", token, ua_id)
    assert success.tag == q(SASL2_NS, "success")
    fast.close()
    assert ua_id in server.cli("fast", "list", "alice@localhost").stdout
    server.cli("passwd", "alice", "localhost", input=XMPP_PASSWORD + "\n")
    assert count("fast_tokens") == 0
    fast, failure = await asyncio.to_thread(fast_login, server, "alice", token, ua_id)
    assert condition(failure) == "not-authorized"
    fast.close()

    # An API token made by the command line, where the server reads it.
    server.cli("api-token", "create", "--scope", "read")
    assert count("api_tokens") == 1
    assert len(server.cli("api-token", "list").stdout.strip().splitlines()) == 1

    for table in ("blocking_items", "upload_slots", "fast_tokens", "api_tokens"):
        assert sqlite_rows(server, table) == 0, table
    await bob.close()
