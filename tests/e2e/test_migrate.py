"""``xmppd migrate``: a server that ran on SQLite moves to PostgreSQL and to MariaDB. Real clients
(slixmpp) make accounts, a roster with groups, an offline message, a vCard, a persistent room
with an affiliation and archived messages; the server stops; the copy runs; xmppd starts on the
database server with the old SQLite file beside it (for the services that keep their tables
there, docs/STORAGE.md) and the clients find everything again, logging in with their old
passwords. A copy killed midway (SIGKILL) and run again with ``--resume`` ends with the same
counts."""

from __future__ import annotations

import re
import sqlite3
import subprocess

import pytest

from clients import async_test, can_login, login, settled
from conftest import CLI_TIMEOUT, PASSWORD as XMPP_PASSWORD, xmppd_bin
from mariadb_fixture import PASSWORD as MARIADB_PASSWORD, mariadb  # noqa: F401
from postgres_fixture import PASSWORD as PG_PASSWORD, postgres  # noqa: F401
from test_mam import iterate, mam_client
from test_muc import ROOM, create_configured, muc_login
from test_personal import plugins, slix_vcard

ENGINES = {
    "postgres": ("postgres", PG_PASSWORD),
    "mariadb": ("mysql", MARIADB_PASSWORD),
}
ARCHIVED = [f"archived {i}" for i in range(3)]
COUNT_LINE = re.compile(r"^(\w+)\s+(\d+)\s+(\d+|\(stays\))")


def counts(output: str) -> dict[str, tuple[int, str]]:
    """The table of counts `xmppd migrate` prints: table → (SQLite rows, target rows)."""
    return {m[1]: (int(m[2]), m[3]) for m in map(COUNT_LINE.match, output.splitlines()) if m}


def database(request, engine: str):
    return request.getfixturevalue(engine)


def target_count(db, engine: str, table: str) -> int:
    query = f"SELECT count(*) FROM {table}"
    out = db.psql(query) if engine == "postgres" else db.sql(query)
    return int(out.strip())


def migrate_args(server, db, secret) -> list[str]:
    return ["migrate", "--from", f"sqlite:{server.data_dir / 'xmppd.sqlite'}",
            "--to", db.url, "--password-file", str(secret)]


async def populate(server) -> None:
    alice = await muc_login(server, "alice", setup=plugins("xep_0054"))
    await alice.update_roster("bob@localhost", name="Bobby", groups=["Friends", "Work"])
    await alice.plugin["xep_0054"].publish_vcard(slix_vcard(alice, "Alice Liddell"))
    await create_configured(alice, ROOM, "al", **{"muc#roomconfig_persistentroom": True})
    await alice.plugin["xep_0045"].set_affiliation(ROOM, "member", jid="bob@localhost")
    # carol is offline: stored for her.
    alice.chat("carol@localhost", "while you were away")
    bob = await mam_client(server, "bob")
    for text in ARCHIVED:
        alice.chat("bob@localhost", text)
    await bob.expect_message(ARCHIVED[-1])
    await settled(alice)
    await bob.close()
    await alice.close()


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
@async_test(timeout=240)
async def test_a_sqlite_server_moves_to_a_database_server(make_server, request, tmp_path,
                                                          engine):
    db = database(request, engine)
    backend, password = ENGINES[engine]
    old = make_server()
    await populate(old)
    old.stop()
    sqlite_path = old.data_dir / "xmppd.sqlite"
    with sqlite3.connect(sqlite_path) as source:
        tables = {r[0] for r in source.execute("SELECT name FROM sqlite_master")}
        assert "mam_messages" in tables and "roster_groups" in tables
    secret = tmp_path / "db-password"
    secret.write_text(password + "\n")

    result = old.cli(*migrate_args(old, db, secret))
    output = result.stdout + result.stderr
    assert password not in output
    table = counts(result.stdout)
    for name in ("users", "scram", "roster", "offline", "muc_rooms", "muc_affiliations"):
        source_rows, target_rows = table[name]
        assert source_rows > 0 and str(source_rows) == target_rows, (name, output)
    assert table["users"] == (3, "3")
    assert table["roster_groups"] == (2, "2"), output
    # Every service table is listed: copied where the target has it, else kept in SQLite.
    for name in ("mam_messages", "personal_vcards"):
        source_rows, target_rows = table[name]
        assert source_rows > 0, output
        if target_rows == "(stays)":
            assert "kept in the SQLite file" in output
        else:
            assert target_rows == str(source_rows)
            assert target_count(db, engine, name) == source_rows
    assert target_count(db, engine, "users") == 3

    # xmppd on the database server, with the old file beside it for what stays in SQLite.
    new = make_server(users=(), storage={
        "backend": backend, "url": db.url, "password_file": str(secret),
        "sqlite_path": str(sqlite_path)})
    for user in ("alice", "bob", "carol"):
        assert await can_login(new, user, XMPP_PASSWORD), user
    assert not await can_login(new, "alice", "not the password")
    carol = await login(new, "carol")
    await carol.expect_message("while you were away", "alice@localhost")
    await carol.close()
    alice = await muc_login(new, "alice", setup=plugins("xep_0054"))
    item = alice.client_roster["bob@localhost"]
    assert (item["name"], sorted(item["groups"])) == ("Bobby", ["Friends", "Work"])
    members = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "member")
    assert [str(j) for j in members] == ["bob@localhost"]
    owners = await alice.plugin["xep_0045"].get_affiliation_list(ROOM, "owner")
    assert [str(j) for j in owners] == ["alice@localhost"]
    vcard = await alice.plugin["xep_0054"].get_vcard("alice@localhost")
    assert vcard["vcard_temp"]["FN"] == "Alice Liddell"
    bob = await mam_client(new, "bob")
    assert await iterate(bob) == ARCHIVED
    # New offline messages get new ids after the copied ones.
    bob.chat("carol@localhost", "after the move")
    await settled(bob)
    carol = await login(new, "carol")
    await carol.expect_message("after the move", "bob@localhost")
    await bob.close()
    await alice.close()
    await carol.close()
    assert password not in new.output()


@pytest.mark.parametrize("engine", ["postgres", "mariadb"])
@async_test(timeout=300)
async def test_a_copy_killed_midway_resumes_to_the_same_counts(make_server, request, tmp_path,
                                                               engine):
    db = database(request, engine)
    backend, password = ENGINES[engine]
    old = make_server()
    alice = await login(old, "alice")
    alice.chat("carol@localhost", "first of many")
    await settled(alice)
    await alice.close()
    old.stop()
    sqlite_path = old.data_dir / "xmppd.sqlite"
    # Enough offline rows that a copy one row per transaction is still running when killed.
    rows = 3000
    with sqlite3.connect(sqlite_path) as source:
        source.executemany(
            "INSERT INTO offline (domain, user, stamp_ms, xml) VALUES ('localhost', 'carol', ?, ?)",
            [(i, f"<message xmlns='jabber:client'><body>bulk {i}</body></message>")
             for i in range(rows)])
    secret = tmp_path / "db-password"
    secret.write_text(password)
    args = [str(xmppd_bin()), "--config", str(old.config_path), *migrate_args(old, db, secret)]

    copy = subprocess.Popen([*args, "--batch-rows", "1"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    progress = re.compile(r"^offline: (\d+) of (\d+) rows")
    copied = 0
    for line in copy.stdout:
        m = progress.match(line)
        if m and int(m[1]) >= 100:
            copied = int(m[1])
            copy.kill()
            break
    copy.wait(timeout=CLI_TIMEOUT)
    copy.stdout.close()
    assert copied, "the copy never reached the offline messages"
    assert 0 < target_count(db, engine, "offline") < rows + 1

    # Run again: refused without --resume, then finished with it.
    refused = subprocess.run(args, capture_output=True, text=True, timeout=CLI_TIMEOUT)
    assert refused.returncode == 1 and "--resume" in refused.stderr, refused.stderr
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True,
                             timeout=CLI_TIMEOUT)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    table = counts(resumed.stdout)
    assert table["offline"] == (rows + 1, str(rows + 1)), resumed.stdout
    assert table["users"] == (3, "3")
    assert target_count(db, engine, "offline") == rows + 1

    # The same counts a run without interruption gives (into a second database is not needed:
    # every table's source count is the SQLite file's).
    with sqlite3.connect(sqlite_path) as source:
        for name, (source_rows, target_rows) in table.items():
            if name == "roster_groups" or target_rows == "(stays)":
                continue
            assert source.execute(f"SELECT count(*) FROM {name}").fetchone()[0] == source_rows
            assert target_rows == str(source_rows), name

    new = make_server(users=(), storage={
        "backend": backend, "url": db.url, "password_file": str(secret),
        "sqlite_path": str(sqlite_path)})
    carol = await login(new, "carol")
    await carol.expect_message("first of many", "alice@localhost")
    await carol.close()
