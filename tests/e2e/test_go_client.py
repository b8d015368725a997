"""A second client implementation beside slixmpp: go-sendxmpp (Debian's package, built on a Go
XMPP library), driven as a user would from a shell. It negotiates STARTTLS and SASL with its
own code, so these tests check interoperability, not only slixmpp's reading of the protocol."""

import shutil
import subprocess

from clients import async_test, login
from conftest import PASSWORD

def go_send(server, user: str, to: str, body: str, password: str = PASSWORD):
    # `cargo xtask ci` installs it; missing here is a failure, not a skip.
    program = shutil.which("go-sendxmpp")
    assert program, "go-sendxmpp is not installed (Debian package go-sendxmpp)"
    return subprocess.run(
        [program, "-u", f"{user}@{server.domain}", "-p", password,
         "-j", f"127.0.0.1:{server.starttls_port}", "-n", to],
        input=body, capture_output=True, text=True, timeout=30,
    )


@async_test()
async def test_go_client_message_reaches_an_online_slixmpp_user(server):
    bob = await login(server, "bob")
    result = go_send(server, "alice", "bob@localhost", "hello from another client")
    assert result.returncode == 0, result.stderr
    await bob.expect_message("hello from another client", "alice@localhost")
    await bob.close()


@async_test()
async def test_go_client_message_to_offline_user_is_kept(server):
    result = go_send(server, "alice", "carol@localhost", "stored for later")
    assert result.returncode == 0, result.stderr
    carol = await login(server, "carol")
    await carol.expect_message("stored for later", "alice@localhost")
    await carol.close()


def test_go_client_with_a_wrong_password_is_refused(server):
    result = go_send(server, "alice", "bob@localhost", "never sent", password="not it")
    assert result.returncode != 0
    assert "not-authorized" in (result.stderr + result.stdout), result
