"""Privacy of logs: with ``hide_ip_in_logs`` no client address reaches the server's output;
without it, addresses are logged (so the hiding test cannot pass by logging nothing)."""

import asyncio

import pytest

from clients import async_test, login


@pytest.mark.parametrize("hide", [True, False])
@async_test()
async def test_client_ip_in_logs(make_server, hide):
    server = make_server(server={"hide_ip_in_logs": hide, "log_level": "debug"})
    start = server.line_count()
    alice = await login(server, "alice")
    bob = await login(server, "bob")
    alice.chat("bob@localhost", "hello")
    await bob.expect_message("hello", "alice@localhost")
    await alice.close()
    bob.kill()
    await asyncio.sleep(0.5)
    output = server.output(start)
    assert "alice@localhost" in output or "alice" in output, "nothing was logged at all"
    if hide:
        assert "127.0.0.1" not in output, [l for l in output.splitlines() if "127.0.0.1" in l]
    else:
        assert "127.0.0.1" in output, "client address never logged with hide_ip_in_logs=false"
