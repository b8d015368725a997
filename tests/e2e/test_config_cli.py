"""The command line: configuration checking with precise error messages, account
administration against a live server, the sessions listing, and two virtual hosts served by
one process."""

import re

import pytest

from clients import async_test, can_login, login
from conftest import Server, to_toml


def test_check_config_accepts_the_test_config(make_server):
    server = make_server(start=False, users=())
    result = server.cli("check-config")
    assert result.returncode == 0


@pytest.mark.parametrize("section, key, bad", [
    ("c2s", "max_stanza_bytes", "'lots'"),
    ("server", "hide_ip_in_logs", "42"),
    ("offline", "max_per_user", "-3"),
])
def test_check_config_names_the_bad_key_and_line(make_server, section, key, bad):
    server = make_server(start=False, users=())
    text = server.config_path.read_text()
    lines = text.splitlines()
    if f"[{section}]" not in lines:
        lines += ["", f"[{section}]"]
    index = lines.index(f"[{section}]") + 1
    lines.insert(index, f"{key} = {bad}")
    server.config_path.write_text("\n".join(lines) + "\n")
    line_number = index + 1
    result = server.cli("check-config", check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, f"bad {key} = {bad} accepted:\n{output}"
    assert key in output, f"error does not name {key}:\n{output}"
    assert re.search(rf"\b{line_number}\b", output), \
        f"error does not give line {line_number}:\n{output}"


def test_check_config_rejects_unknown_keys(make_server):
    server = make_server(start=False, users=())
    server.config_path.write_text(
        server.config_path.read_text().replace("[c2s]", "[c2s]\nmax_stanza_byte = 5"))
    result = server.cli("check-config", check=False)
    assert result.returncode != 0, "a misspelt key was silently ignored"
    assert "max_stanza_byte" in result.stdout + result.stderr


def test_check_config_rejects_tls_files_that_do_not_exist(make_server, tmp_path):
    server = make_server(start=False, users=())
    server.config_path.write_text(server.config_path.read_text() + to_toml({"tls": {
        "certificate": [{"domain": "localhost", "cert": str(tmp_path / "missing.pem"),
                         "key": str(tmp_path / "missing.key")}]}}))
    result = server.cli("check-config", check=False)
    assert result.returncode != 0
    assert "missing.pem" in result.stdout + result.stderr


@async_test()
async def test_register_passwd_unregister(server):
    server.cli("register", "dave", "localhost", "first password")
    assert await can_login(server, "dave", "first password")
    duplicate = server.cli("register", "dave", "localhost", "other", check=False)
    assert duplicate.returncode != 0, "registering an existing user succeeded"

    server.cli("passwd", "dave", "localhost", "second password")
    assert not await can_login(server, "dave", "first password")
    assert await can_login(server, "dave", "second password")

    server.cli("unregister", "dave", "localhost")
    assert not await can_login(server, "dave", "second password")
    listed = server.cli("users", "list", "localhost").stdout
    assert "dave" not in listed


@async_test()
async def test_password_from_stdin(server):
    server.cli("register", "erin", "localhost", input="from stdin\n")
    assert await can_login(server, "erin", "from stdin")
    server.cli("passwd", "erin", "localhost", input="changed on stdin\n")
    assert await can_login(server, "erin", "changed on stdin")


def test_register_rejects_invalid_names(server):
    for user, domain in (("bad user", "localhost"), ("x@y", "localhost"),
                         ("frank", "not-hosted.example"), ("", "localhost")):
        result = server.cli("register", user, domain, "pw", check=False)
        assert result.returncode != 0, f"registered {user!r}@{domain!r}"


def test_users_list(server):
    listed = server.cli("users", "list").stdout
    for user in ("alice", "bob", "carol"):
        assert user in listed, listed
    assert "alice" in server.cli("users", "list", "localhost").stdout


@async_test()
async def test_sessions_lists_connected_jids(server):
    alice = await login(server, "alice")
    listed = server.cli("sessions").stdout
    assert str(alice.boundjid) in listed, listed
    await alice.close()
    assert str(alice.boundjid) not in server.cli("sessions").stdout


@async_test()
async def test_two_virtual_hosts(make_server):
    server: Server = make_server(users=(), server={"hosts": ["localhost", "second.test"]})
    server.register("alice")
    server.register("zoe", domain="second.test")
    server.register("alice", "a different password", domain="second.test")
    listed = server.cli("users", "list", "second.test").stdout
    assert "zoe" in listed and "bob" not in listed

    alice = await login(server, "alice")
    zoe = await login(server, "zoe", domain="second.test")
    other_alice = await login(server, "alice", password="a different password",
                              domain="second.test")
    assert str(other_alice.boundjid.bare) == "alice@second.test"
    assert not await can_login(server, "zoe")  # zoe exists only on second.test

    alice.chat("zoe@second.test", "hello across hosts")
    await zoe.expect_message("hello across hosts", "alice@localhost")
    zoe.chat("alice@localhost", "hello back")
    await alice.expect_message("hello back", "zoe@second.test")
    # Same local part on two hosts: two accounts, no cross-talk.
    alice.chat("alice@second.test", "namesake")
    await other_alice.expect_message("namesake", "alice@localhost")
    await alice.expect_none(lambda e: e.findtext("{jabber:client}body") == "namesake", 0.5)
