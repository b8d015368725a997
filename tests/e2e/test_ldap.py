"""LDAP: users of one virtual host checked against a real slapd while another host keeps its
internal accounts; administrators from an LDAP group and from the configuration; shared roster
groups from LDAP and from the configuration; an LDAP outage and recovery; TLS to the directory
with CA verification; the optional SCRAM cache."""

import asyncio
import socket
import xml.etree.ElementTree as ET

import pytest

from clients import LoginFailed, async_test, can_login, login, q
from conftest import PASSWORD
from ldap_fixture import BASE, USERS, make_ca_signed_cert, slapd, slapd_tls  # noqa: F401
from raw import SASL_NS, RawClient

CORP = "corp.example"  # accounts in LDAP
LOCAL = "localhost"  # internal accounts
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
COMMANDS = "http://jabber.org/protocol/commands"
ROSTER = "jabber:iq:roster"
CLIENT = "jabber:client"


def start(make_server, slapd, *, ldap=None, local_users=("alice",), **overrides):
    """A server for CORP (LDAP) and LOCAL (internal, with ``local_users``)."""
    server_section = {"hosts": [CORP, LOCAL], **overrides.pop("server", {})}
    server = make_server(users=(), start=False, server=server_section,
                         ldap=slapd.ldap_config(**(ldap or {})), **overrides)
    # The test configuration writer knows no nested tables: add [auth.hosts] by hand.
    with open(server.config_path, "a") as f:
        f.write(f'\n[auth.hosts]\n"{CORP}" = "ldap"\n')
    for user in local_users:
        server.register(user, domain=LOCAL)
    server.start()
    return server


def tls_stream(server, domain: str) -> RawClient:
    client = RawClient(server.starttls_port)
    client.open(domain)
    client.starttls()
    client.open(domain)
    return client


def mechanisms(server, domain: str) -> set[str]:
    features = tls_stream(server, domain).features
    return {m.text for m in features.iter(q(SASL_NS, "mechanism"))}


def plain_failure(server, user: str, password: str, domain: str = CORP) -> list[str]:
    """The conditions of a PLAIN attempt's ``<failure/>`` ([] on success)."""
    reply = tls_stream(server, domain).auth_plain(user, password)
    if reply.tag == q(SASL_NS, "success"):
        return []
    return [c.tag.split("}", 1)[1] for c in reply if not c.tag.endswith("}text")]


async def corp_login(server, user: str, password: str | None = None, **kw) -> bool:
    return await can_login(server, user, password or USERS[user], domain=CORP, **kw)


@async_test()
async def test_ldap_login_right_and_wrong_password(make_server, slapd):
    server = start(make_server, slapd)
    client = await login(server, "alice", password=USERS["alice"], domain=CORP)
    assert client.plugin["feature_mechanisms"].mech.name == "PLAIN"
    assert str(client.boundjid.bare) == f"alice@{CORP}"
    await client.close()
    # A bind can only check a password: SCRAM is not offered for the LDAP host.
    assert mechanisms(server, CORP) == {"PLAIN"}
    assert "SCRAM-SHA-256" in mechanisms(server, LOCAL)

    assert not await corp_login(server, "alice", "not the password")
    assert not await corp_login(server, "nobody", "whatever")
    # Filter metacharacters in the user name are escaped, not a wildcard matching alice.
    assert not await corp_login(server, "*", USERS["alice"])
    # The other host's accounts are its own: the LDAP password is not alice@localhost's.
    assert await can_login(server, "alice", PASSWORD, domain=LOCAL)
    assert not await can_login(server, "bob", USERS["bob"], domain=LOCAL)
    # Accounts of the LDAP host are made in the directory: the CLI refuses, naming why.
    refused = server.cli("register", "eve", CORP, "some password", check=False)
    assert refused.returncode != 0 and "LDAP" in refused.stderr, refused
    # So the start-up hint does not suggest that command for the LDAP host.
    banner = server.output()
    assert f"register alice {CORP}" not in banner, banner
    assert f"accounts of {CORP} come from the LDAP directory" in banner, banner


@async_test()
async def test_user_removed_from_ldap_cannot_log_in(make_server, slapd):
    server = start(make_server, slapd)
    assert await corp_login(server, "dave")
    slapd.delete_user("dave")
    assert not await corp_login(server, "dave")
    assert await corp_login(server, "carol"), "others are unaffected"


async def admin_commands(client, domain: str) -> list[str]:
    reply = await client.iq("get", f"<query xmlns='{DISCO_ITEMS}' node='{COMMANDS}'/>",
                            to=domain)
    assert reply.get("type") == "result"
    nodes = [i.get("node") or "" for i in reply.iter(q(DISCO_ITEMS, "item"))]
    return [n for n in nodes if "/admin#" in n]


async def registered_users(client) -> list[str]:
    """The value of get-registered-users-num on the client's host."""
    payload = (f"<command xmlns='{COMMANDS}' action='execute' "
               "node='http://jabber.org/protocol/admin#get-registered-users-num'/>")
    reply = await client.iq("set", payload, to=client.boundjid.domain)
    assert reply.get("type") == "result", ET.tostring(reply)
    return [v.text for f in reply.iter("{jabber:x:data}field")
            if f.get("var") == "registeredusersnum" for v in f.iter("{jabber:x:data}value")]


@async_test()
async def test_administrators_from_ldap_group_and_config(make_server, slapd):
    server = start(make_server, slapd, local_users=("root", "alice"),
                   ldap={"admin_group": f"cn=jabberadmins,ou=groups,{BASE}", "refresh_secs": 1},
                   server={"admins": [f"root@{LOCAL}"]})
    alice = await login(server, "alice", password=USERS["alice"], domain=CORP)
    bob = await login(server, "bob", password=USERS["bob"], domain=CORP)
    root = await login(server, "root", domain=LOCAL)
    local_alice = await login(server, "alice", domain=LOCAL)
    assert await admin_commands(alice, CORP), "alice is in cn=jabberadmins"
    assert await admin_commands(root, LOCAL), "root is in server.admins"
    assert not await admin_commands(bob, CORP)
    # Group members are JIDs on the LDAP host only.
    assert not await admin_commands(local_alice, LOCAL)

    # Accounts of the LDAP host are counted in the directory, the others in xmppd's store.
    assert await registered_users(alice) == ["4"]
    assert await registered_users(root) == ["2"]

    # The group is read again on schedule: bob joins and becomes an administrator.
    slapd.change_group("jabberadmins", "add", "member", f"uid=bob,ou=people,{BASE}")
    for _ in range(50):
        if await admin_commands(bob, CORP):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("bob did not become an administrator after the refresh")
    for c in (alice, bob, root, local_alice):
        await c.close()


@async_test()
async def test_ldap_down_fails_cleanly_and_recovers(make_server, slapd):
    server = start(make_server, slapd)
    assert await corp_login(server, "alice")
    slapd.stop()
    assert plain_failure(server, "alice", USERS["alice"]) == ["temporary-auth-failure"]
    with pytest.raises(LoginFailed):
        await login(server, "bob", password=USERS["bob"], domain=CORP)
    # Internal users of the other host do not depend on the directory.
    assert await can_login(server, "alice", PASSWORD, domain=LOCAL)
    slapd.start()
    assert await corp_login(server, "alice")
    assert await corp_login(server, "bob")
    assert server.running


@async_test()
async def test_unresponsive_ldap_times_out_as_temporary_failure(make_server, slapd):
    # A listener that accepts connections and never answers: only the timeout ends the wait.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    uri = f"ldap://127.0.0.1:{silent.getsockname()[1]}"
    server = start(make_server, slapd, ldap={"uri": uri, "timeout_secs": 1})
    try:
        assert plain_failure(server, "alice", USERS["alice"]) == ["temporary-auth-failure"]
        assert await can_login(server, "alice", PASSWORD, domain=LOCAL)
    finally:
        silent.close()


async def roster(client) -> dict[str, tuple[str, list[str]]]:
    reply = await client.iq("get", f"<query xmlns='{ROSTER}'/>")
    return {i.get("jid"): (i.get("subscription"), sorted(g.text for g in i.iter(q(ROSTER, "group"))))
            for i in reply.iter(q(ROSTER, "item"))}


@async_test()
async def test_shared_roster_groups_visible_on_login(make_server, slapd):
    groups = [
        {"name": "Staff", "ldap_group": f"cn=staff,ou=groups,{BASE}"},
        {"name": "Ops", "members": [f"alice@{CORP}", f"alice@{LOCAL}"]},
    ]
    server = start(make_server, slapd, shared_roster={"group": groups})
    alice = await login(server, "alice", password=USERS["alice"], domain=CORP)
    assert await roster(alice) == {
        f"bob@{CORP}": ("both", ["Staff"]),
        f"alice@{LOCAL}": ("both", ["Ops"]),
    }
    # Presence flows both ways without any subscription request.
    bob = await login(server, "bob", password=USERS["bob"], domain=CORP)
    await alice.expect_presence(f"bob@{CORP}")
    await bob.expect_presence(f"alice@{CORP}")
    assert await roster(bob) == {f"alice@{CORP}": ("both", ["Staff"])}
    local = await login(server, "alice", domain=LOCAL)
    await local.expect_presence(f"alice@{CORP}")
    # Someone in no group with alice sees nothing of her.
    dave = await login(server, "dave", password=USERS["dave"], domain=CORP)
    assert await roster(dave) == {}
    await dave.expect_none(lambda e: (e.get("from") or "").startswith(f"alice@{CORP}"))
    for c in (alice, bob, local, dave):
        await c.close()


# How long a group change may take to show: the groups are read every second.
REFRESHED = 8.0


async def expect_shared_change(client, contact: str, *, removed: bool, group: str = "") -> None:
    """The roster push and the presence ``client`` gets when ``contact`` joins or leaves one
    of its shared groups."""
    item = await client.expect_roster_push(contact, timeout=REFRESHED)
    if removed:
        assert item.get("subscription") == "remove", ET.tostring(item)
        await client.expect_presence(contact, "unavailable", timeout=REFRESHED)
    else:
        assert item.get("subscription") == "both", ET.tostring(item)
        assert [g.text for g in item.iter(q(ROSTER, "group"))] == [group], ET.tostring(item)
        await client.expect_presence(contact, timeout=REFRESHED)


@async_test()
async def test_shared_group_changes_reach_online_members_at_once(make_server, slapd):
    groups = [{"name": "Staff", "ldap_group": f"cn=staff,ou=groups,{BASE}"}]
    server = start(make_server, slapd, ldap={"refresh_secs": 1}, shared_roster={"group": groups})
    alice = await login(server, "alice", password=USERS["alice"], domain=CORP)
    carol = await login(server, "carol", password=USERS["carol"], domain=CORP)
    assert await roster(alice) == {f"bob@{CORP}": ("both", ["Staff"])}
    assert await roster(carol) == {}

    slapd.change_group("staff", "add", "member", f"uid=carol,ou=people,{BASE}")
    await expect_shared_change(alice, f"carol@{CORP}", removed=False, group="Staff")
    await expect_shared_change(carol, f"alice@{CORP}", removed=False, group="Staff")
    # bob is offline: carol sees him in her roster, without presence.
    await carol.expect_roster_push(f"bob@{CORP}", timeout=REFRESHED)
    assert await roster(carol) == {f"alice@{CORP}": ("both", ["Staff"]),
                                   f"bob@{CORP}": ("both", ["Staff"])}

    slapd.change_group("staff", "delete", "member", f"uid=carol,ou=people,{BASE}")
    await expect_shared_change(alice, f"carol@{CORP}", removed=True)
    await expect_shared_change(carol, f"alice@{CORP}", removed=True)
    assert await roster(alice) == {f"bob@{CORP}": ("both", ["Staff"])}
    # Once out of the group, carol's presence no longer reaches alice.
    carol.send_presence(pstatus="still here")
    await alice.expect_none(lambda e: e.findtext(f"{{{CLIENT}}}status") == "still here",
                            within=1.0, what="presence from a former group member")
    for c in (alice, carol):
        await c.close()


@async_test()
async def test_posix_groups_list_members_by_user_name(make_server, slapd):
    # cn=ops is a posixGroup: memberUid values are user names, not DNs.
    ops = f"cn=ops,ou=groups,{BASE}"
    groups = [{"name": "Ops", "ldap_group": ops}]
    server = start(make_server, slapd, shared_roster={"group": groups},
                   ldap={"group_member_attribute": "memberUid", "admin_group": ops,
                         "refresh_secs": 1})
    carol = await login(server, "carol", password=USERS["carol"], domain=CORP)
    alice = await login(server, "alice", password=USERS["alice"], domain=CORP)
    assert await roster(carol) == {f"dave@{CORP}": ("both", ["Ops"])}
    assert await admin_commands(carol, CORP), "carol is a memberUid of the admin group"
    assert not await admin_commands(alice, CORP)
    assert await roster(alice) == {}

    slapd.change_group("ops", "add", "memberUid", "alice")
    await expect_shared_change(carol, f"alice@{CORP}", removed=False, group="Ops")
    await expect_shared_change(alice, f"carol@{CORP}", removed=False, group="Ops")
    for c in (alice, carol):
        await c.close()


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
@async_test()
async def test_tls_to_the_directory_verifies_the_ca(make_server, slapd_tls, tmp_path, mode):
    uri = (slapd_tls.ldaps_uri if mode == "ldaps"
           else f"ldap://localhost:{slapd_tls.port}")
    tls = {"uri": uri, "tls": mode, "ca_file": str(slapd_tls.ca_file)}
    server = start(make_server, slapd_tls, ldap=tls)
    assert await corp_login(server, "alice")
    server.stop()

    # A certificate from another CA is refused: no login, and no password sent to it.
    other_ca, _ = make_ca_signed_cert("someone else's CA", tmp_path / "c.pem", tmp_path / "k.pem")
    (tmp_path / "other-ca.pem").write_bytes(other_ca)
    wrong = start(make_server, slapd_tls, ldap={**tls, "ca_file": str(tmp_path / "other-ca.pem")})
    assert plain_failure(wrong, "alice", USERS["alice"]) == ["temporary-auth-failure"]


@async_test()
async def test_scram_cache_keeps_keys_from_the_last_plain_login(make_server, slapd):
    server = start(make_server, slapd, ldap={"scram_cache": True})
    assert "SCRAM-SHA-256" in mechanisms(server, CORP)
    # Nothing cached before a first PLAIN login.
    assert not await corp_login(server, "carol", mech="SCRAM-SHA-256")
    assert await corp_login(server, "carol", mech="PLAIN")
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        assert await corp_login(server, "carol", mech=mech), mech

    # The documented trade-off: a password changed in LDAP is not seen by SCRAM until the
    # next PLAIN login replaces the cached keys.
    slapd.set_password("carol", "new password")
    assert await corp_login(server, "carol", mech="SCRAM-SHA-256")
    assert await corp_login(server, "carol", "new password", mech="PLAIN")
    assert await corp_login(server, "carol", "new password", mech="SCRAM-SHA-256")

    # The cache never outlives the directory entry.
    slapd.delete_user("carol")
    assert not await corp_login(server, "carol", "new password", mech="SCRAM-SHA-256")


@async_test()
async def test_nested_groups_are_read_recursively(make_server, slapd):
    # cn=staff (alice, bob) becomes a member of cn=jabberadmins (alice), and jabberadmins of
    # staff: a cycle, which must end without reading a group twice.
    slapd.change_group("jabberadmins", "add", "member", f"cn=staff,ou=groups,{BASE}")
    slapd.change_group("staff", "add", "member", f"cn=jabberadmins,ou=groups,{BASE}")
    admins = f"cn=jabberadmins,ou=groups,{BASE}"
    server = start(make_server, slapd, ldap={"admin_group": admins},
                   shared_roster={"group": [{"name": "Admins", "ldap_group": admins}]})
    bob = await login(server, "bob", password=USERS["bob"], domain=CORP)
    assert await admin_commands(bob, CORP), "bob is in staff, nested in jabberadmins"
    assert await roster(bob) == {f"alice@{CORP}": ("both", ["Admins"])}
    carol = await login(server, "carol", password=USERS["carol"], domain=CORP)
    assert not await admin_commands(carol, CORP)
    assert await server.wait_for_log("nested groups resolved recursively")
    for c in (bob, carol):
        await c.close()
