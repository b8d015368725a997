"""The operator's command line against a running server over its local admin socket:
``xmppd broadcast``, ``kick``, ``motd set|clear`` and ``sessions``; the socket's permissions,
its removal at exit, and what the commands do when no server runs."""

import stat

import pytest

from clients import async_test, is_message, login, q


def is_body(text):
    return lambda e: is_message(e) and e.findtext(q("jabber:client", "body")) == text


def socket_path(server):
    return server.data_dir / "admin.sock"


def test_socket_is_private_and_removed_at_exit(server):
    path = socket_path(server)
    mode = path.stat().st_mode
    assert stat.S_ISSOCK(mode)
    assert stat.S_IMODE(mode) == 0o600, oct(mode)
    assert server.stop() == 0
    assert not path.exists()
    result = server.cli("broadcast", "anyone?", check=False)
    assert result.returncode == 1
    assert "not running" in result.stderr


@pytest.mark.parametrize("users", [(), ("alice",)], ids=["serve-first", "register-first"])
def test_data_directory_and_database_are_private(make_server, users):
    # The database holds SCRAM keys: whichever command creates them, only the owner may read.
    server = make_server(users=users)
    assert stat.S_IMODE(server.data_dir.stat().st_mode) == 0o700
    database = server.data_dir / "xmppd.sqlite"
    for path in (database, database.with_name("xmppd.sqlite-wal")):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))


@async_test()
async def test_broadcast_reaches_every_online_client(server):
    clients = [await login(server, user) for user in ("alice", "bob", "carol")]
    clients.append(await login(server, "bob", resource="second"))
    out = server.cli("broadcast", "Server restart in 5 minutes").stdout
    assert "4 session" in out, out
    for client in clients:
        msg = await client.expect(is_body("Server restart in 5 minutes"), what="broadcast")
        assert msg.get("from") == server.domain


@async_test()
async def test_kick_and_sessions(server):
    alice = await login(server, "alice", resource="desk")
    bob = await login(server, "bob")
    listed = server.cli("sessions").stdout
    assert "alice@localhost/desk" in listed and "bob@localhost/" in listed, listed
    server.cli("kick", "alice@localhost/desk")
    for _ in range(100):
        if alice.stream_errors:
            break
        await alice.expect_none(lambda e: False, within=0.05)
    assert alice.stream_errors == ["policy-violation"], alice.stream_errors
    listed = server.cli("sessions").stdout
    assert "alice@localhost" not in listed, listed
    result = server.cli("kick", "alice@localhost", check=False)
    assert result.returncode == 1 and "no session" in result.stderr
    await bob.close()


@async_test()
async def test_motd_set_and_clear(server):
    server.cli("motd", "set", "Read the new rules")
    alice = await login(server, "alice")
    await alice.expect(is_body("Read the new rules"), what="message of the day")
    server.cli("motd", "clear")
    bob = await login(server, "bob")
    await bob.expect_none(lambda e: is_message(e) and e.get("from") == server.domain,
                          within=1.0, what="cleared MOTD")
    result = server.cli("motd", "set", "x", "--host", "elsewhere.org", check=False)
    assert result.returncode == 1
    # A new message reaches the sessions already online at once.
    server.cli("motd", "set", "Rules changed again")
    await bob.expect(is_body("Rules changed again"), what="message of the day while online")
    await alice.expect(is_body("Rules changed again"), what="message of the day while online")


@async_test()
async def test_motd_set_while_stopped_is_shown_after_start(make_server):
    server = make_server(start=False)
    server.cli("motd", "set", "Set offline")
    server.start()
    alice = await login(server, "alice")
    await alice.expect(is_body("Set offline"), what="message of the day")
