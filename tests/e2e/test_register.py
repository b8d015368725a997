"""In-band registration (XEP-0077): account creation before login where a host enables it
(never by default, TLS only, rate-limited per address), and for logged-in users password
change and account removal."""

import asyncio

from slixmpp.exceptions import IqError

from clients import Client, LoginFailed, async_test, can_login, login, q
from conftest import PASSWORD
from raw import RawClient, stanza_error_condition
from test_sasl import tls_stream

REGISTER_NS = "jabber:iq:register"
FEATURE_NS = "http://jabber.org/features/iq-register"
NEW_PASSWORD = "a brand new passphrase"


def raw_register(client: RawClient, user: str, password: str):
    return client.iq("set", f"<query xmlns='{REGISTER_NS}'><username>{user}</username>"
                            f"<password>{password}</password></query>")


def test_registration_is_off_by_default(server):
    client = tls_stream(server)
    assert client.features.find(q(FEATURE_NS, "register")) is None
    reply = raw_register(client, "mallory", PASSWORD)
    assert reply.get("type") == "error"
    assert stanza_error_condition(reply) == "not-allowed"
    # The stream survives the refusal: the client may still log in.
    assert client.auth_plain("alice", PASSWORD).tag.endswith("success")


def test_registration_needs_tls(make_server):
    server = make_server(registration={"hosts": ["localhost"]}, c2s={
        "starttls_listen": ["127.0.0.1:0"], "direct_tls_listen": ["127.0.0.1:0"],
        "require_starttls": False})
    client = RawClient(server.starttls_port)
    features = client.open(server.domain)
    assert features.find(q(FEATURE_NS, "register")) is None
    reply = raw_register(client, "plain", PASSWORD)
    assert stanza_error_condition(reply) == "not-allowed"


async def register_with_slixmpp(server, user: str, password: str) -> str:
    """Connects a slixmpp client that registers ``user`` in-band and then logs in with it;
    returns "ok" or the condition the registration failed with."""
    client = Client(f"{user}@{server.domain}", password)
    client.register_plugin("xep_0077")
    client.plugin["xep_0077"].force_registration = True
    client.enable_plaintext = False
    outcome = asyncio.get_running_loop().create_future()

    async def on_register(_form):
        iq = client.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = user
        iq["register"]["password"] = password
        try:
            await iq.send()
        except IqError as err:
            if not outcome.done():
                outcome.set_result(err.iq["error"]["condition"])
            client.disconnect()

    client.add_event_handler("register", on_register)
    client.add_event_handler("session_start", lambda _e: outcome.done() or outcome.set_result("ok"))
    client.add_event_handler("failed_all_auth", lambda _e: outcome.done() or
                             outcome.set_result("failed_auth"))
    client.connect("127.0.0.1", server.starttls_port)
    try:
        return await asyncio.wait_for(outcome, 20)
    finally:
        client.kill()


@async_test()
async def test_register_then_login_and_conflict(make_server):
    server = make_server(registration={"hosts": ["localhost"]})
    features = tls_stream(server).features
    assert features.find(q(FEATURE_NS, "register")) is not None
    assert await register_with_slixmpp(server, "newbie", PASSWORD) == "ok"
    assert await can_login(server, "newbie")
    assert await register_with_slixmpp(server, "newbie", "another password") == "conflict"
    assert await register_with_slixmpp(server, "shorty", "short") == "not-acceptable"


def test_missing_fields_are_not_acceptable(make_server):
    server = make_server(registration={"hosts": ["localhost"]})
    client = tls_stream(server)
    form = client.iq("get", f"<query xmlns='{REGISTER_NS}'/>")
    assert form.get("type") == "result"
    query = form.find(q(REGISTER_NS, "query"))
    assert query.find(q(REGISTER_NS, "username")) is not None
    assert query.find(q(REGISTER_NS, "password")) is not None
    reply = client.iq("set", f"<query xmlns='{REGISTER_NS}'><username>x</username></query>")
    assert stanza_error_condition(reply) == "not-acceptable"


def test_registrations_are_rate_limited_per_address(make_server):
    server = make_server(registration={"hosts": ["localhost"], "max_per_ip_per_hour": 2})
    client = tls_stream(server)
    for user in ("one", "two"):
        assert raw_register(client, user, PASSWORD).get("type") == "result"
    reply = raw_register(client, "three", PASSWORD)
    assert stanza_error_condition(reply) == "resource-constraint"
    # A new connection from the same address is limited too.
    reply = raw_register(tls_stream(server), "four", PASSWORD)
    assert stanza_error_condition(reply) == "resource-constraint"


@async_test()
async def test_password_change_by_the_user(server):
    alice = await login(server, "alice")
    alice.register_plugin("xep_0077")
    await alice.plugin["xep_0077"].change_password(NEW_PASSWORD, jid=server.domain)
    await alice.close()
    assert await can_login(server, "alice", NEW_PASSWORD)
    assert not await can_login(server, "alice", PASSWORD)

    bob = await login(server, "bob")
    bob.register_plugin("xep_0077")
    try:
        await bob.plugin["xep_0077"].change_password("short", jid=server.domain)
        raise AssertionError("a too short password was accepted")
    except IqError as err:
        assert err.iq["error"]["condition"] == "not-acceptable"


@async_test()
async def test_account_removal_by_the_user(server):
    carol = await login(server, "carol")
    carol.register_plugin("xep_0077")
    await carol.plugin["xep_0077"].cancel_registration(jid=server.domain)
    # The session ends after the answer.
    for _ in range(100):
        if carol.transport is None or carol.stream_errors:
            break
        await asyncio.sleep(0.05)
    try:
        await login(server, "carol", presence=False, roster=False)
        raise AssertionError("a removed account could log in")
    except LoginFailed:
        pass
    users = server.cli("users", "list").stdout.split()
    assert "carol@localhost" not in users, users
