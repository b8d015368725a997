"""Ad-hoc commands (XEP-0050) and service administration (XEP-0133) through slixmpp's
xep_0050 plugin: administrators announce, set the message of the day, count and list users,
disable accounts and end sessions; everybody else gets <forbidden/>."""

import xml.etree.ElementTree as ET

from slixmpp.exceptions import IqError

from clients import LoginFailed, async_test, is_message, login, q

COMMANDS_NS = "http://jabber.org/protocol/commands"
DATA_NS = "jabber:x:data"
ADMIN = "http://jabber.org/protocol/admin#"


def admin_server(make_server, **overrides):
    return make_server(server={"admins": ["alice@localhost"]}, **overrides)


def submit_form(client, **fields):
    form = client.plugin["xep_0004"].make_form(ftype="submit")
    for var, value in fields.items():
        form.add_field(var=var, value=value)
    return form


async def run_command(client, node: str, **fields):
    """Executes ``node`` on the server; when it answers with a form, submits ``fields``
    (completing the command). Returns the final <command/> as XML."""
    xep50 = client.plugin["xep_0050"]
    first = await xep50.send_command(client.boundjid.domain, node)
    command = first["command"]
    if command["status"] != "executing":
        return command.xml
    sid = command["sessionid"]
    assert sid, "a form without a session id"
    done = await xep50.send_command(client.boundjid.domain, node, action="complete",
                                    sessionid=sid, payload=submit_form(client, **fields))
    assert done["command"]["sessionid"] == sid
    return done["command"].xml


def result_value(command: ET.Element, var: str) -> list[str]:
    for field in command.iter(q(DATA_NS, "field")):
        if field.get("var") == var:
            return [v.text or "" for v in field.findall(q(DATA_NS, "value"))]
    raise AssertionError(f"no field {var} in {ET.tostring(command, 'unicode')}")


def with_adhoc(client):
    for plugin in ("xep_0004", "xep_0030", "xep_0050"):
        client.register_plugin(plugin)
    return client


def is_body(text):
    return lambda e: is_message(e) and e.findtext(q("jabber:client", "body")) == text


async def admin_and_two_bobs(make_server):
    """A server, its administrator alice (with ad-hoc support) and two sessions of bob."""
    server = admin_server(make_server)
    alice = with_adhoc(await login(server, "alice"))
    bob1 = await login(server, "bob", resource="one")
    bob2 = await login(server, "bob", resource="two")
    return server, alice, bob1, bob2


async def expect_notice(server, client, body: str, subject: str) -> None:
    """A message from the server's domain with ``body`` and ``subject``."""
    msg = await client.expect(is_body(body), what=f"notice {body!r}")
    assert msg.get("from") == server.domain
    assert msg.findtext(q("jabber:client", "subject")) == subject


@async_test()
async def test_broadcast_reaches_every_online_client(make_server):
    server, alice, bob1, bob2 = await admin_and_two_bobs(make_server)
    carol = await login(server, "carol", presence=False)
    command = await run_command(alice, ADMIN + "announce", subject="Notice",
                                announcement="Maintenance at five")
    assert command.get("status") == "completed", ET.tostring(command)
    for client in (alice, bob1, bob2, carol):
        await expect_notice(server, client, "Maintenance at five", "Notice")


@async_test()
async def test_non_admins_are_forbidden(make_server):
    server = admin_server(make_server)
    bob = with_adhoc(await login(server, "bob"))
    items = await bob.plugin["xep_0050"].get_commands(server.domain)
    assert not items["disco_items"]["items"], "a non-admin sees admin commands"
    for node in ("announce", "set-motd", "get-online-users-num", "disable-user"):
        try:
            await bob.plugin["xep_0050"].send_command(server.domain, ADMIN + node)
            raise AssertionError(f"{node} ran for a non-admin")
        except IqError as err:
            assert err.iq["error"]["condition"] == "forbidden", node

    alice = with_adhoc(await login(server, "alice"))
    items = await alice.plugin["xep_0050"].get_commands(server.domain)
    nodes = {item[1] for item in items["disco_items"]["items"]}
    for op in ("announce", "set-motd", "edit-motd", "delete-motd", "get-online-users-list",
               "get-online-users-num", "get-registered-users-num", "disable-user",
               "reenable-user", "end-user-session", "change-user-password"):
        assert ADMIN + op in nodes, f"{op} not listed: {sorted(nodes)}"
    try:
        await alice.plugin["xep_0050"].send_command(server.domain, "no-such-command")
        raise AssertionError("an unknown node ran")
    except IqError as err:
        assert err.iq["error"]["condition"] == "item-not-found"


@async_test()
async def test_motd_is_delivered_once_per_change_at_login(make_server):
    server = admin_server(make_server)
    alice = with_adhoc(await login(server, "alice"))
    await run_command(alice, ADMIN + "set-motd", announcement="Welcome back")
    bob = await login(server, "bob")
    await bob.expect(is_body("Welcome back"), what="message of the day")
    await bob.close()
    bob = await login(server, "bob")
    await bob.expect_none(is_body("Welcome back"), within=1.0, what="second MOTD")
    await bob.close()

    await run_command(alice, ADMIN + "edit-motd", announcement="Changed")
    bob = await login(server, "bob")
    await bob.expect(is_body("Changed"), what="changed message of the day")
    await bob.close()

    await run_command(alice, ADMIN + "delete-motd")
    carol = await login(server, "carol")
    await carol.expect_none(lambda e: is_message(e) and e.get("from") == server.domain,
                            within=1.0, what="deleted MOTD")


@async_test()
async def test_motd_reaches_online_users_when_set(make_server):
    # XEP-0133 §4.24: users online when the message is set receive it then.
    server, alice, bob1, bob2 = await admin_and_two_bobs(make_server)
    command = await run_command(alice, ADMIN + "set-motd", subject="News",
                                announcement="Set while you were here")
    assert command.get("status") == "completed", ET.tostring(command)
    for client in (alice, bob1, bob2):
        await expect_notice(server, client, "Set while you were here", "News")
    # Recorded as seen: neither a new session nor another change of presence repeats it.
    bob3 = await login(server, "bob", resource="three")
    bob1.send_presence(pstatus="back")
    for client in (bob1, bob3):
        await client.expect_none(is_body("Set while you were here"), within=1.0,
                                 what="the message of the day again")
    for client in (alice, bob1, bob2, bob3):
        await client.close()


@async_test()
async def test_counts_and_online_list(make_server):
    server = admin_server(make_server)
    alice = with_adhoc(await login(server, "alice"))
    await login(server, "bob")
    command = await run_command(alice, ADMIN + "get-online-users-num")
    assert result_value(command, "onlineusersnum") == ["2"]
    command = await run_command(alice, ADMIN + "get-registered-users-num")
    assert result_value(command, "registeredusersnum") == ["3"]
    command = await run_command(alice, ADMIN + "get-online-users-list", max_items="none")
    assert result_value(command, "onlineuserjids") == ["alice@localhost", "bob@localhost"]


@async_test()
async def test_disable_end_session_and_password(make_server):
    server = admin_server(make_server)
    alice = with_adhoc(await login(server, "alice"))
    bob = await login(server, "bob")
    await run_command(alice, ADMIN + "disable-user", accountjids="bob@localhost")
    for _ in range(100):
        if bob.stream_errors:
            break
        await bob.expect_none(lambda e: False, within=0.05)
    assert bob.stream_errors, "the disabled account's session was not ended"
    try:
        await login(server, "bob", presence=False, roster=False)
        raise AssertionError("a disabled account logged in")
    except LoginFailed:
        pass
    await run_command(alice, ADMIN + "reenable-user", accountjids="bob@localhost")
    bob = await login(server, "bob")

    await run_command(alice, ADMIN + "end-user-session", accountjids=str(bob.boundjid))
    for _ in range(100):
        if bob.stream_errors:
            break
        await bob.expect_none(lambda e: False, within=0.05)
    assert bob.stream_errors, "end-user-session did not end the session"

    command = await run_command(alice, ADMIN + "change-user-password",
                                accountjid="carol@localhost", password="changed by admin")
    note = command.find(q(COMMANDS_NS, "note"))
    assert note is not None and note.get("type") == "info", ET.tostring(command)
    carol = await login(server, "carol", password="changed by admin", presence=False)
    await carol.close()
