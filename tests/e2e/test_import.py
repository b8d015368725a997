"""Moving accounts from other servers with ``xmppd import`` (XEP-0227).

Real servers write the files: Debian's ejabberd (``ejabberdctl export_piefxis``) and Prosody
(``prosody-migrator`` into its ``xep0227`` store), each started privately by s2s_fixture.py,
with accounts given a password, a roster, a vCard, private XML and (ejabberd) an offline
message. After ``xmppd import`` the users log in to xmppd with the same password: SCRAM-SHA-1
with the keys the other server stored, PLAIN, and SCRAM-SHA-256 once the PLAIN login derived
its keys. Then ``xmppd export`` and an import into a fresh server give the same accounts.
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import xml.etree.ElementTree as ET

import pytest

from clients import LoginFailed, async_test, login, q
from s2s_fixture import TOOL_TIMEOUT, Ejabberd, Prosody, S2sNetwork, running, unavailable

DOMAIN = "import.example"
ROSTER, VCARD, PRIVATE = "jabber:iq:roster", "vcard-temp", "jabber:iq:private"
PROSODY_DATA = pathlib.Path("/var/lib/prosody")
NOTE = "<note xmlns='x:notes'>the key is under the mat</note>"


def xmppd_for(make_server, net: S2sNetwork, **overrides):
    """A stopped xmppd serving DOMAIN with no accounts (certificate from the network's CA)."""
    cert = net.cert(DOMAIN)
    return make_server(users=(), start=False, server={"hosts": [DOMAIN]},
                       tls={"certificate": [{"domain": DOMAIN, "cert": str(cert.cert),
                                             "key": str(cert.key)}]}, **overrides)


async def check_imported_alice(xmppd, *, offline: bool, subscription: str = "both") -> None:
    """alice's data arrived, logging in with the keys the other server made (SCRAM-SHA-1)."""
    # Before any presence: ejabberd's one-sided item ('both' with a bob who has no item for
    # alice) would lose its 'to' at the answer to alice's presence probe (RFC 6121 §4.3.2).
    alice = await login(xmppd, "alice", mech="SCRAM-SHA-1", presence=False)
    roster = await alice.iq("get", f"<query xmlns='{ROSTER}'/>")
    items = roster.findall(f"{q(ROSTER, 'query')}/{q(ROSTER, 'item')}")
    assert [(i.get("jid"), i.get("name"), i.get("subscription"),
             [g.text for g in i.findall(q(ROSTER, "group"))]) for i in items] == \
        [(f"bob@{DOMAIN}", "Bobby", subscription, ["Friends"])], ET.tostring(roster)
    vcard = await alice.iq("get", f"<vCard xmlns='{VCARD}'/>", to=f"alice@{DOMAIN}")
    assert vcard.findtext(f"{q(VCARD, 'vCard')}/{q(VCARD, 'FN')}") == "Alice Liddell", \
        ET.tostring(vcard)
    private = await alice.iq("get", f"<query xmlns='{PRIVATE}'><note xmlns='x:notes'/></query>")
    assert private.findtext(f"{q(PRIVATE, 'query')}/{q('x:notes', 'note')}") == \
        "the key is under the mat", ET.tostring(private)
    if offline:
        alice.send_presence()
        await alice.expect_message("hello offline", f"bob@{DOMAIN}")
    await alice.close()


async def check_passwords(xmppd) -> None:
    """SCRAM-SHA-256 fails until a PLAIN login derived its keys, then works."""
    since = xmppd.line_count()
    with pytest.raises(LoginFailed):
        await login(xmppd, "bob", mech="SCRAM-SHA-256", roster=False, presence=False)
    assert "the account has no keys for this mechanism yet" in xmppd.output(since)
    for mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "SCRAM-SHA-1"):
        client = await login(xmppd, "bob", mech=mech, roster=False, presence=False)
        await client.close()
    with pytest.raises(LoginFailed):
        await login(xmppd, "bob", password="not it", mech="PLAIN", roster=False,
                    presence=False)


def import_file(xmppd, path: pathlib.Path, *args: str) -> str:
    return xmppd.cli("import", str(path), *args).stdout


@pytest.fixture
def net(tmp_path):
    network = S2sNetwork(tmp_path / "net", [DOMAIN])
    yield network
    network.stop()


@async_test(timeout=300)
async def test_an_ejabberd_export_logs_in_with_the_same_passwords(make_server, net, tmp_path):
    ejabberd = Ejabberd(net, DOMAIN, users=("alice", "bob"),
                        modules={"mod_vcard": {}, "mod_private": {}, "mod_offline": {},
                                 "mod_admin_extra": {}},
                        options={"auth_password_format": "scram"})
    out = tmp_path / "ejabberd-export"
    out.mkdir()
    with running(net, ejabberd):
        ejabberd.ctl("add_rosteritem", "alice", DOMAIN, "bob", DOMAIN, "Bobby", "Friends",
                     "both")
        ejabberd.ctl("set_vcard", "alice", DOMAIN, "FN", "Alice Liddell")
        ejabberd.ctl("private_set", "alice", DOMAIN, NOTE)
        ejabberd.ctl("send_message", "chat", f"bob@{DOMAIN}", f"alice@{DOMAIN}", "",
                     "hello offline")
        ejabberd.ctl("export_piefxis", str(out))
    # The main file includes one file per host.
    main = [f for f in out.iterdir() if "server-data" in f.read_text()]
    assert len(main) == 1, list(out.iterdir())
    assert "scram-credentials" in next(f for f in out.iterdir() if f != main[0]).read_text()

    xmppd = xmppd_for(make_server, net)
    report = import_file(xmppd, main[0])
    for line in ("accounts created: 2", "roster items: 1", "vCards: 1",
                 "private XML elements: 1", "offline messages: 1"):
        assert line in report, report
    # Again: nothing is duplicated.
    again = import_file(xmppd, main[0])
    assert "accounts created: 0" in again and "accounts skipped (already present): 2" in again
    assert "offline messages: 0" in again, again
    xmppd.start()
    await check_imported_alice(xmppd, offline=True)
    await check_passwords(xmppd)

    # Out again, and into a fresh server: the same accounts, every hash's keys included.
    exported = tmp_path / "xmppd-export"
    xmppd.cli("export", str(exported))
    second = xmppd_for(make_server, net)
    report = import_file(second, exported / f"{DOMAIN}.xml")
    assert "accounts created: 2" in report, report
    second.start()
    # The first server's answer to alice's presence probe took the item's 'to' (bob has no
    # item for her): exported as it now is.
    await check_imported_alice(second, offline=False, subscription="from")
    client = await login(second, "bob", mech="SCRAM-SHA-256", roster=False, presence=False)
    await client.close()


def prosody_export(prosody: Prosody, out: pathlib.Path) -> list[pathlib.Path]:
    """``prosody-migrator`` from the instance's internal store into its XEP-0227 store: one
    file per user, ``USER@HOST.xml``.

    Prosody 0.12's XEP-0227 store writes into Prosody's data directory (``/var/lib/prosody``
    for Debian's build), whatever the output's ``path``: the migrator runs in a private
    mount namespace where ``out`` is mounted there, so nothing outside the test changes.
    ``--root``: the tests run as root, and the test's directory is not the ``prosody``
    user's to read."""
    config = prosody.dir / "migrator.cfg.lua"
    # The accounts first: the other stores are written into the account's file.
    stores = '{ "accounts", "roster", "vcard", "private" }'
    config.write_text(
        f'input {{ type = "internal"; path = "{prosody.dir / "data"}";\n'
        f'  hosts = {{ ["{prosody.domain}"] = {stores} }}; }}\n'
        f'output {{ type = "xep0227"; path = "{out}"; }}\n')
    out.mkdir()
    argv = ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c",
            f'mount --bind "$0" {PROSODY_DATA} && exec "$@"', str(out),
            "prosody-migrator", "--root", "--config", str(config), "input", "output"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    return sorted(out.glob("*.xml"))


@async_test(timeout=300)
async def test_a_prosody_export_logs_in_with_the_same_passwords(make_server, net, tmp_path):
    if shutil.which("prosody-migrator") is None or not PROSODY_DATA.is_dir():
        unavailable("prosody-migrator not found (Debian package prosody)")
    prosody = Prosody(net, DOMAIN, users=("alice", "bob"),
                      modules=("vcard", "private"))
    with running(net, prosody):
        alice = await login(prosody, "alice", presence=False)
        reply = await alice.iq("set", f"<query xmlns='{ROSTER}'><item jid='bob@{DOMAIN}' "
                                      "name='Bobby'><group>Friends</group></item></query>")
        assert reply.get("type") == "result", ET.tostring(reply)
        reply = await alice.iq("set", f"<vCard xmlns='{VCARD}'><FN>Alice Liddell</FN></vCard>")
        assert reply.get("type") == "result", ET.tostring(reply)
        reply = await alice.iq("set", f"<query xmlns='{PRIVATE}'>{NOTE}</query>")
        assert reply.get("type") == "result", ET.tostring(reply)
        await alice.close()
    files = prosody_export(prosody, tmp_path / "prosody-export")
    assert [f.name for f in files] == [f"alice@{DOMAIN}.xml", f"bob@{DOMAIN}.xml"], files

    xmppd = xmppd_for(make_server, net)
    reports = [import_file(xmppd, f) for f in files]
    assert all("accounts created: 1" in r for r in reports), reports
    xmppd.start()
    alice = await login(xmppd, "alice", mech="SCRAM-SHA-1", presence=False)
    roster = await alice.iq("get", f"<query xmlns='{ROSTER}'/>")
    items = roster.findall(f"{q(ROSTER, 'query')}/{q(ROSTER, 'item')}")
    assert [(i.get("jid"), i.get("name"), [g.text for g in i.findall(q(ROSTER, "group"))])
            for i in items] == [(f"bob@{DOMAIN}", "Bobby", ["Friends"])], ET.tostring(roster)
    vcard = await alice.iq("get", f"<vCard xmlns='{VCARD}'/>", to=f"alice@{DOMAIN}")
    assert vcard.findtext(f"{q(VCARD, 'vCard')}/{q(VCARD, 'FN')}") == "Alice Liddell"
    private = await alice.iq("get", f"<query xmlns='{PRIVATE}'><note xmlns='x:notes'/></query>")
    assert private.findtext(f"{q(PRIVATE, 'query')}/{q('x:notes', 'note')}") == \
        "the key is under the mat", ET.tostring(private)
    await alice.close()
    await check_passwords(xmppd)


def test_a_malformed_file_is_refused_and_names_the_line(make_server, tmp_path):
    xmppd = make_server(users=(), start=False)
    bad = tmp_path / "bad.xml"
    bad.write_text("<server-data xmlns='urn:xmpp:pie:0'>\n<host jid='localhost'>\n"
                   "<user name='a' password='p'/>\n<user name='b'/>\n</host></server-data>\n")
    result = xmppd.cli("import", str(bad), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == \
        f"error: {bad}:4: user \"b\": neither a password nor SCRAM credentials"
    # Nothing was written: the file is checked whole first.
    assert xmppd.cli("users", "list").stdout.strip() == ""
