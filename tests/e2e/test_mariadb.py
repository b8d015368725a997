"""``[storage] backend = "mysql"`` (MariaDB): the accounts, rosters and offline messages of the
core in a real MariaDB, through real clients (slixmpp), across a restart of xmppd and an outage
of the database; so are the services' stores: block lists, upload slots, FAST tokens, API
tokens, the message archive, personal eventing nodes, vCards and private XML
(docs/STORAGE.md)."""

from clients import async_test, login, settled
from mariadb_fixture import PASSWORD, mariadb  # noqa: F401
from test_postgres import (archive_round_trip, outage_gives_temporary_errors_and_recovers,
                           password_in_url_is_refused, pep_vcard_and_private_xml_survive_a_restart,
                           service_stores_live_on_the_database,
                           unreachable_database_stops_the_start)
from test_upload import upload_config


def maria_storage(db, backend: str = "mysql", **extra) -> dict:
    return {"backend": backend, "url": db.url, **extra}


@async_test()
async def test_accounts_roster_and_offline_messages_live_in_mariadb(make_server, mariadb, tmp_path):
    secret = tmp_path / "db-password"
    secret.write_text(PASSWORD + "\n")
    # The CLI registers alice, bob and carol in MariaDB ("mariadb" names the same backend).
    server = make_server(storage=maria_storage(mariadb, "mariadb", password_file=str(secret)))
    assert mariadb.sql("SELECT username FROM users ORDER BY username").split() == \
        ["alice", "bob", "carol"]

    alice = await login(server, "alice")
    await alice.update_roster("bob@localhost", name="Bobby", groups=["friends", "café ☕"])
    alice.chat("bob@localhost", "kept in mariadb 🦭")
    await settled(alice)
    assert mariadb.sql("SELECT count(*) FROM offline").strip() == "1"
    await alice.close()

    server.restart()
    bob = await login(server, "bob")
    await bob.expect_message("kept in mariadb 🦭", "alice@localhost")
    alice = await login(server, "alice")
    item = alice.client_roster["bob@localhost"]
    assert (item["name"], sorted(item["groups"])) == ("Bobby", ["café ☕", "friends"])
    assert mariadb.sql("SELECT count(*) FROM offline").strip() == "0"
    assert PASSWORD not in server.output()


@async_test(timeout=150.0)
async def test_the_message_archive_lives_in_mariadb(make_server, mariadb, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=maria_storage(mariadb))
    await archive_round_trip(server, lambda sql: mariadb.sql(sql))


@async_test()
async def test_a_database_outage_gives_temporary_errors_and_the_server_recovers(
        make_server, mariadb, monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(
        storage=maria_storage(mariadb, connect_timeout_secs=2, pool_wait_secs=2))
    await outage_gives_temporary_errors_and_recovers(server, mariadb, PASSWORD)


@async_test(timeout=120.0)
async def test_block_lists_uploads_and_tokens_live_in_mariadb(make_server, mariadb, monkeypatch,
                                                              tmp_path):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=maria_storage(mariadb), **upload_config())
    await service_stores_live_on_the_database(server, mariadb.sql, tmp_path)


@async_test(timeout=120)
async def test_pep_items_vcards_and_private_xml_live_in_mariadb(make_server, mariadb,
                                                                monkeypatch):
    monkeypatch.setenv("XMPPD_STORAGE_PASSWORD", PASSWORD)
    server = make_server(storage=maria_storage(mariadb))
    await pep_vcard_and_private_xml_survive_a_restart(server, mariadb.sql)


def test_a_password_in_the_url_is_refused_with_a_one_line_error(make_server):
    password_in_url_is_refused(make_server, "mysql", "mysql://xmppd:hunter2@127.0.0.1/xmppd")


def test_an_unreachable_database_stops_the_start_with_a_clear_error(make_server, tmp_path):
    unreachable_database_stops_the_start(
        make_server, tmp_path, "mysql", "mysql://xmppd@127.0.0.1:1/xmppd", "MariaDB")
