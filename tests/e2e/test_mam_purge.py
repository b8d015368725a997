"""``xmppd mam purge`` against a running server: messages archived through slixmpp, purged by
age and by user from the command line while the server keeps serving, checked with MAM
queries; and the command's answers to bad arguments."""

from __future__ import annotations

import sqlite3

import pytest

from clients import async_test, login, settled
from test_mam import iterate, mam_client

DAY_MS = 86_400_000


def backdate(server, marker: str, days: int) -> int:
    """Moves the archive stamps of the messages whose text holds ``marker`` ``days`` into the
    past, as if they had been archived then; returns how many rows moved. Age cannot be waited
    for, so the test writes it into the server's database (WAL: the server keeps running)."""
    db = sqlite3.connect(server.config["storage"]["sqlite_path"], timeout=30)
    try:
        with db:
            cur = db.execute(
                "UPDATE mam_messages SET stamp_ms = stamp_ms - ? WHERE instr(stanza, ?) > 0",
                (days * DAY_MS, marker))
            return cur.rowcount
    finally:
        db.close()


@async_test(timeout=150.0)
async def test_purge_by_age_and_by_user_while_the_server_runs(server):
    alice = await mam_client(server, "alice")
    bob = await mam_client(server, "bob")
    carol = await login(server, "carol")
    for text in ("old one", "old two"):
        alice.chat("bob@localhost", text)
    await bob.expect_message("old two")
    alice.chat("bob@localhost", "recent")
    # Carol writes once "recent" arrived, so that bob's archive has the two in this order.
    await bob.expect_message("recent")
    carol.chat("bob@localhost", "from carol")
    await bob.expect_message("from carol")
    await settled(alice)
    await settled(carol)
    # Each message of alice's is in two archives (hers and bob's).
    assert backdate(server, "old ", 40) == 4

    out = server.cli("mam", "purge", "--older-than", "30").stdout
    assert "deleted 4 archived message" in out, out
    assert await iterate(bob) == ["recent", "from carol"]
    assert await iterate(alice) == ["recent"]

    out = server.cli("mam", "purge", "--user", "Alice@LOCALHOST").stdout
    assert "deleted 1 archived message" in out, out
    assert await iterate(alice) == []
    assert await iterate(bob) == ["recent", "from carol"], "only alice's archive went"

    # A user's messages older than a cut only; a second run finds nothing left.
    assert backdate(server, "from carol", 2) == 2
    out = server.cli("mam", "purge", "--user", "bob@localhost", "--older-than", "1.5").stdout
    assert "deleted 1 archived message" in out, out
    assert await iterate(bob) == ["recent"]
    out = server.cli("mam", "purge", "--user", "bob@localhost", "--older-than", "1.5").stdout
    assert "deleted 0 archived message" in out, out

    # The server kept serving and archiving throughout.
    alice.chat("bob@localhost", "after the purges")
    await bob.expect_message("after the purges")
    assert await iterate(bob) == ["recent", "after the purges"]


@pytest.mark.parametrize("args, code, says", [
    ([], 2, "--user"),
    (["--older-than", "soon"], 2, "--older-than"),
    (["--older-than=-1"], 2, "--older-than"),
    (["--older-than", "inf"], 2, "--older-than"),
    (["--user", "alice@elsewhere.example"], 1, "not a host"),
    (["--user", "alice@localhost/phone"], 1, "bare JID"),
    (["--user", "localhost"], 1, "bare JID"),
    (["--user", "a@b@c"], 1, "invalid JID"),
])
def test_purge_refuses_bad_arguments(make_server, args, code, says):
    server = make_server(users=(), start=False)
    result = server.cli("mam", "purge", *args, check=False)
    assert result.returncode == code, (args, result.returncode, result.stderr)
    first = result.stderr.splitlines()[0] if result.stderr else ""
    assert first.startswith("error:") and says in first, (args, result.stderr)
    assert result.stdout == "", "nothing was purged"
