"""Active Directory as the account provider, against a real Samba AD domain controller
(``samba_fixture``): logins over StartTLS and LDAPS, the reasons of refused binds in the log,
nested groups (in-chain rule and recursive reads, through a cycle), primary groups, paged
searches, ranged member reads, and users named by their userPrincipalName."""

import asyncio
import re

import pytest

from clients import async_test, can_login, login
from samba_fixture import (  # noqa: F401
    BULK_USERS, ENABLED, GROUPS, LOCKOUT_THRESHOLD, PASSWORDS, USERS, samba_dc)
from test_ldap import CORP, admin_commands, plain_failure, registered_users, roster, start

# The first test also waits for the domain controller: provisioning and 2000 accounts take
# about 20 s on an idle machine, several times that on a loaded one. A safety net only.
pytestmark = pytest.mark.timeout(600)

ADMINS = f"CN=jabberadmins,{GROUPS}"
STAFF = [{"name": "Staff", "ldap_group": f"CN=staff,{GROUPS}"}]
# The Staff group as alice sees it: carol and ad-dave through devs (nested), gina through
# her primaryGroupID.
ALICE_STAFF = {f"{u}@{CORP}": ("both", ["Staff"]) for u in ("carol", "ad-dave", "gina")}
DEBUG_LDAP = "info,xmppd_ldap=debug"


async def ad_login(server, user: str, password: str | None = None) -> bool:
    return await can_login(server, user, password or PASSWORDS[user], domain=CORP)


@pytest.mark.parametrize("mode", ["starttls", "ldaps"])
@async_test()
async def test_ad_login_over_tls_and_why_logins_are_refused(make_server, samba_dc, mode):
    server = start(make_server, samba_dc, ldap={"mode": mode})
    assert await ad_login(server, "alice")
    assert plain_failure(server, "alice", "not the password") == ["not-authorized"]
    # The directory's reason, at info level, with the client's address (hide_ip is off).
    [refused] = await server.wait_for_log("data 52e")
    assert "wrong password" in refused and "user=alice" in refused, refused
    assert "127.0.0.1" in refused, refused
    # A disabled account is kept out by the usual filter clause: "not found".
    assert plain_failure(server, "erin", PASSWORDS["erin"]) == ["not-authorized"]
    [missing] = await server.wait_for_log("user=erin")
    assert "no directory entry matches the user filter" in missing, missing
    # Users log in by sAMAccountName here; the userPrincipalName's local part is no name.
    assert not await ad_login(server, "dave.smith")
    # Without upn_suffixes, a user name with an @ names no account.
    assert plain_failure(server, "alice@corp.example", PASSWORDS["alice"]) == ["not-authorized"]


@async_test()
async def test_disabled_and_locked_accounts_are_logged_with_their_reason(make_server, samba_dc):
    # Without the disabled-account clause the directory itself refuses erin's bind.
    anyone = "(&(objectClass=user)(objectCategory=person)(sAMAccountName=%u))"
    server = start(make_server, samba_dc, ldap={"user_filter": anyone},
                   server={"hide_ip_in_logs": True})
    # The directory checked her password first: the client may know why (RFC 6120 §6.5.1).
    assert plain_failure(server, "erin", PASSWORDS["erin"]) == ["account-disabled"]
    # A wrong password on a disabled account says nothing of the account.
    assert plain_failure(server, "erin", "not the password") == ["not-authorized"]
    [disabled] = await server.wait_for_log("data 533")
    assert "account disabled" in disabled and "user=erin" in disabled, disabled
    for _ in range(LOCKOUT_THRESHOLD):
        samba_dc.bad_bind("frank")
    # A locked account is refused before the password is looked at: no more is said.
    assert plain_failure(server, "frank", PASSWORDS["frank"]) == ["not-authorized"]
    [locked] = await server.wait_for_log("data 775")
    assert "account locked" in locked and "user=frank" in locked, locked
    # hide_ip_in_logs: the lines name no address.
    assert "127.0.0.1" not in disabled + locked, (disabled, locked)


async def nested_groups_hold(server) -> None:
    """bob administers through itadmins (in jabberadmins, and jabberadmins in it: a cycle);
    alice's Staff group reaches carol and ad-dave through devs, and gina by primary group."""
    alice = await login(server, "alice", password=PASSWORDS["alice"], domain=CORP)
    bob = await login(server, "bob", password=PASSWORDS["bob"], domain=CORP)
    assert await admin_commands(bob, CORP), "bob is in itadmins, nested in jabberadmins"
    assert not await admin_commands(alice, CORP)
    staff = {jid: item for jid, item in (await roster(alice)).items() if "Staff" in item[1]}
    assert staff == ALICE_STAFF
    gina = await login(server, "gina", password=PASSWORDS["gina"], domain=CORP)
    assert f"alice@{CORP}" in await roster(gina)
    for c in (alice, bob, gina):
        await c.close()


@async_test()
async def test_nested_groups_with_the_in_chain_rule_and_paged_searches(
        make_server, samba_dc, monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LDAP)
    server = start(make_server, samba_dc, shared_roster={"group": STAFF},
                   ldap={"admin_group": ADMINS, "page_size": 2})
    await nested_groups_hold(server)
    assert await server.wait_for_log("nested groups resolved with the in-chain rule"), server.output()
    # Staff's members (and gina's primary group search) came in pages of two.
    assert max(int(m) for line in await server.wait_for_log("LDAP search page")
               for m in re.findall(r"page=(\d+)", line)) >= 2


@async_test()
async def test_nested_groups_read_recursively_in_ranges(make_server, samba_dc, monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LDAP)
    groups = [*STAFF, {"name": "Big", "ldap_group": f"CN=big,{GROUPS}"}]
    server = start(make_server, samba_dc, shared_roster={"group": groups},
                   ldap={"admin_group": ADMINS, "nested_groups": "recursive",
                         "range_size": 10})
    alice = await login(server, "alice", password=PASSWORDS["alice"], domain=CORP)
    items = await roster(alice)
    big = {jid for jid, (_, groups) in items.items() if "Big" in groups}
    assert big == {f"bulk{i:04d}@{CORP}" for i in range(40)}, sorted(big)
    await alice.close()
    await nested_groups_hold(server)
    # The 41 values of big's member attribute came in ranges of ten.
    ranges = {re.search(r"range=(\S+)", line).group(1)
              for line in await server.wait_for_log("LDAP ranged read") if "CN=big" in line}
    assert {"member;range=0-9", "member;range=40-*"} <= ranges, ranges


@async_test()
async def test_users_counted_through_paging(make_server, samba_dc, monkeypatch):
    monkeypatch.setenv("RUST_LOG", DEBUG_LDAP)
    server = start(make_server, samba_dc, ldap={"admin_group": ADMINS, "page_size": 100})
    bob = await login(server, "bob", password=PASSWORDS["bob"], domain=CORP)
    since = server.line_count()
    enabled = sum(1 for (_, _, uac) in USERS.values() if uac & 2 == 0)
    assert await registered_users(bob) == [str(BULK_USERS + enabled)]
    # The log reaches the test through a reader thread: the lines may trail the answer.
    deadline = asyncio.get_running_loop().time() + 15
    while True:
        pages = [line for line in server.output(since).splitlines() if "LDAP search page" in line]
        if len(pages) >= BULK_USERS // 100 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert len(pages) >= BULK_USERS // 100, len(pages)
    await bob.close()


@async_test()
async def test_users_named_by_user_principal_name(make_server, samba_dc):
    upn = {
        "uid_attribute": "userPrincipalName",
        "user_filter": f"(&(objectClass=user)(objectCategory=person)"
                       f"(userPrincipalName=%u@*){ENABLED})",
        "admin_group": ADMINS,
        "upn_suffixes": [CORP],
    }
    server = start(make_server, samba_dc, shared_roster={"group": STAFF}, ldap=upn)
    # The full UPN as the SASL user name names the same account.
    assert plain_failure(server, "dave.smith@corp.example", PASSWORDS["dave.smith"]) == []
    assert plain_failure(server, "dave.smith@elsewhere.example",
                         PASSWORDS["dave.smith"]) == ["not-authorized"]
    dave = await login(server, "dave.smith", password=PASSWORDS["dave.smith"], domain=CORP)
    assert await roster(dave) == {
        f"{u}@{CORP}": ("both", ["Staff"]) for u in ("alice", "carol", "gina")}
    alice = await login(server, "alice", password=PASSWORDS["alice"], domain=CORP)
    assert f"dave.smith@{CORP}" in await roster(alice)
    await alice.expect_presence(f"dave.smith@{CORP}")
    # The sAMAccountName is not a login name here, and administrators are named the same way.
    assert not await ad_login(server, "ad-dave", PASSWORDS["dave.smith"])
    bob = await login(server, "bob", password=PASSWORDS["bob"], domain=CORP)
    assert await admin_commands(bob, CORP)
    for c in (dave, alice, bob):
        await c.close()
