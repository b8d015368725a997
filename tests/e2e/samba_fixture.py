"""A real Active Directory domain controller (Samba) for the AD tests, on loopback.

The domain ``corp.example`` is provisioned once per test module into a temporary directory
(``samba-tool domain provision``, a few seconds), seeded offline with one ``ldbadd`` batch
(users, groups, and ``BULK_USERS`` extra accounts for the paging tests), then served by
``samba -i -M single`` with only its LDAP service running: LDAP with StartTLS on
127.0.0.1:389 and LDAPS on 127.0.0.1:636, with a certificate from a fresh test CA naming
``localhost`` and 127.0.0.1 (``ca_file``).

Samba's LDAP ports cannot be moved, so two test runs on one machine take turns: the DC is
held under an exclusive lock (``LOCK_PATH``) while it runs. Samba needs root; where it is not
installed (or not root), the tests are skipped with the reason, except under ``cargo xtask
ci`` (``XMPPD_E2E_CI``) or a CI service (``CI``), where that is a failure.

The directory:

- ``OU=People``: alice, bob, carol (members), ``dave.smith`` (sAMAccountName ``ad-dave``, so
  his two names differ), erin (disabled), frank (to be locked), gina (``primaryGroupID`` is
  Staff's, so she is in no ``member`` value of it), plus ``bulkNNNN`` accounts;
- ``OU=Groups``: ``jabberadmins`` ∋ ``itadmins`` ∋ bob, and ``itadmins`` ∋ ``jabberadmins``
  (a cycle); ``staff`` ∋ alice, ``devs`` (∋ carol, ``dave.smith``); ``big`` with alice and
  ``BIG_GROUP`` bulk accounts;
- the service account ``CN=xmppd,CN=Users``; an account locks after ``LOCKOUT_THRESHOLD``
  wrong passwords.
"""

from __future__ import annotations

import base64
import fcntl
import os
import pathlib
import re
import shutil
import socket
import subprocess
import time

import pytest

from conftest import must_run_here
from ldap_fixture import make_ca_signed_cert

REALM = "corp.example"
BASE = "DC=corp,DC=example"
PEOPLE = f"OU=People,{BASE}"
GROUPS = f"OU=Groups,{BASE}"
ADMIN_PASSWORD = "Admin-Pass-1234"
SERVICE_DN = f"CN=xmppd,CN=Users,{BASE}"
SERVICE_PASSWORD = "Service-Pass-1234"
LOCK_PATH = "/tmp/xmppd-e2e-samba-dc.lock"
LOCK_TIMEOUT = 600.0
START_TIMEOUT = 60.0
LOCKOUT_THRESHOLD = 3
BULK_USERS = 2000
BIG_GROUP = 40
# The usual Active Directory user filter: people, not computers, and not disabled accounts.
ENABLED = "(!(userAccountControl:1.2.840.113556.1.4.803:=2))"

# sAMAccountName -> (userPrincipalName's local part, password, userAccountControl)
USERS = {
    "alice": ("alice", "Alice-Pass-1234", 512),
    "bob": ("bob", "Bob-Pass-1234", 512),
    "carol": ("carol", "Carol-Pass-1234", 512),
    "ad-dave": ("dave.smith", "Dave-Pass-1234", 512),
    "erin": ("erin", "Erin-Pass-1234", 514),  # ACCOUNTDISABLE
    "frank": ("frank", "Frank-Pass-1234", 512),
    "gina": ("gina", "Gina-Pass-1234", 512),
}
GROUP_MEMBERS = {
    "itadmins": ["CN=bob", "CN=jabberadmins"],
    "jabberadmins": ["CN=itadmins"],
    "devs": ["CN=carol", "CN=ad-dave"],
    "staff": ["CN=alice", "CN=devs", "CN=gina"],
    "big": ["CN=alice", *(f"CN=bulk{i:04d}" for i in range(BIG_GROUP))],
}


# The password of each login name (sAMAccountName and UPN local part alike).
PASSWORDS = {name: pw for sam, (upn, pw, _) in USERS.items() for name in (sam, upn)}


def _unicode_pwd(pw: str) -> str:
    # unicodePwd is the quoted password in UTF-16LE (MS-ADTS 3.1.1.3.1.5.1).
    return base64.b64encode(f'"{pw}"'.encode("utf-16-le")).decode()


def _dn(cn: str) -> str:
    name = cn.removeprefix("CN=")
    return f"CN={name},{GROUPS if name in GROUP_MEMBERS else PEOPLE}"


def seed_ldif() -> str:
    entries = [f"dn: {ou},{BASE}\nobjectClass: organizationalUnit\n"
               for ou in ("OU=People", "OU=Groups")]
    entries.append(f"dn: {SERVICE_DN}\nobjectClass: user\nsAMAccountName: xmppd\n"
                   f"unicodePwd:: {_unicode_pwd(SERVICE_PASSWORD)}\nuserAccountControl: 512\n")
    for sam, (upn, pw, uac) in USERS.items():
        entries.append(f"dn: CN={sam},{PEOPLE}\nobjectClass: user\nsAMAccountName: {sam}\n"
                       f"userPrincipalName: {upn}@{REALM}\nunicodePwd:: {_unicode_pwd(pw)}\n"
                       f"userAccountControl: {uac}\n")
    # Bulk accounts have no password (PASSWD_NOTREQD | NORMAL_ACCOUNT): hashing 2000
    # passwords would cost more than the whole test.
    for i in range(BULK_USERS):
        entries.append(f"dn: CN=bulk{i:04d},{PEOPLE}\nobjectClass: user\n"
                       f"sAMAccountName: bulk{i:04d}\nuserPrincipalName: bulk{i:04d}@{REALM}\n"
                       "userAccountControl: 544\n")
    # Groups first without members: a cycle cannot be added in one go.
    for name in GROUP_MEMBERS:
        entries.append(f"dn: CN={name},{GROUPS}\nobjectClass: group\nsAMAccountName: {name}\n")
    return "\n".join(entries)


def members_ldif() -> str:
    changes = []
    for name, members in GROUP_MEMBERS.items():
        values = "".join(f"member: {_dn(m)}\n" for m in members)
        changes.append(f"dn: CN={name},{GROUPS}\nchangetype: modify\nadd: member\n{values}")
    changes.append(f"dn: {BASE}\nchangetype: modify\nreplace: lockoutThreshold\n"
                   f"lockoutThreshold: {LOCKOUT_THRESHOLD}\n")
    return "\n".join(changes)


def _unavailable(why: str):
    if must_run_here():
        pytest.fail(f"Samba AD DC tests cannot run: {why}")
    pytest.skip(f"Samba AD DC tests skipped: {why} (cargo xtask ci installs Samba)")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class SambaDc:
    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.dir = root / "dc"
        self.ca_file = root / "ca.pem"
        self.log = root / "samba.log"
        self.proc: subprocess.Popen | None = None
        self.setup_seconds = 0.0

    def _run(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args[:3])} failed ({result.returncode}):\n"
                        f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        return result.stdout

    def provision(self) -> None:
        started = time.monotonic()
        cert, key = self.root / "server.pem", self.root / "server.key"
        ca_pem, _ = make_ca_signed_cert("xmppd test AD CA", cert, key)
        self.ca_file.write_bytes(ca_pem)
        key.chmod(0o600)  # Samba refuses a key file others can read
        options = {
            "netbios name": "DC1",
            # Only LDAP: no DNS, Kerberos, SMB, RPC… on this machine's ports.
            "server services": "ldap",
            "interfaces": "lo",
            "bind interfaces only": "yes",
            "tls enabled": "yes",
            "tls certfile": str(cert),
            "tls keyfile": str(key),
            "tls cafile": str(self.ca_file),
            "log file": str(self.log),
        }
        args = ["samba-tool", "domain", "provision", f"--realm={REALM.upper()}",
                "--domain=CORP", "--server-role=dc", "--dns-backend=NONE",
                f"--adminpass={ADMIN_PASSWORD}", f"--targetdir={self.dir}",
                "--host-name=dc1", "--host-ip=127.0.0.1"]
        args += [f"--option={k} = {v}" for k, v in options.items()]
        self._run(*args)
        sam = f"{self.dir}/private/sam.ldb"
        (self.root / "seed.ldif").write_text(seed_ldif())
        self._run("ldbadd", "-H", sam, str(self.root / "seed.ldif"))
        (self.root / "members.ldif").write_text(members_ldif())
        self._run("ldbmodify", "-H", sam, str(self.root / "members.ldif"))
        # gina's primary group becomes Staff (she must be a member first, as in AD).
        found = self._run("ldbsearch", "-H", sam, "-b", f"CN=staff,{GROUPS}", "-s", "base",
                          "objectSid")
        rid = re.search(r"objectSid: S-1-5-21-[\d-]+-(\d+)", found)
        assert rid, found
        self.staff_rid = int(rid.group(1))
        change = (f"dn: CN=gina,{PEOPLE}\nchangetype: modify\nreplace: primaryGroupID\n"
                  f"primaryGroupID: {self.staff_rid}\n")
        (self.root / "primary.ldif").write_text(change)
        self._run("ldbmodify", "-H", sam, str(self.root / "primary.ldif"))
        # As in AD, the group's member values no longer list her: only primaryGroupID does.
        found = self._run("ldbsearch", "-H", sam, "-b", f"CN=staff,{GROUPS}", "-s", "base",
                          "member")
        assert "CN=gina," not in found, found
        self.setup_seconds = time.monotonic() - started

    def start(self) -> None:
        log = open(self.root / "samba.out", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            ["samba", "-i", "-M", "single", "-s", str(self.dir / "etc" / "smb.conf")],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        pending = {389, 636}
        while pending:
            if self.proc.poll() is not None:
                out = (self.root / "samba.out").read_text(errors="replace")[-3000:]
                pytest.fail(f"samba exited with {self.proc.returncode}: {out}")
            if time.monotonic() > deadline:
                pytest.fail("samba did not start listening on 389 and 636 in time")
            for port in list(pending):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def bad_bind(self, user: str) -> None:
        """One bind with a wrong password, straight to the directory (over LDAPS)."""
        env = {**os.environ, "LDAPTLS_CACERT": str(self.ca_file)}
        subprocess.run(["ldapwhoami", "-x", "-H", "ldaps://127.0.0.1", "-D",
                        f"CN={user},{PEOPLE}", "-w", "not the password"],
                       capture_output=True, env=env, timeout=30)

    def ldap_config(self, mode: str = "starttls", **overrides) -> dict:
        """The ``[ldap]`` section for xmppd: StartTLS or LDAPS, the test CA, the usual AD
        filter naming users by sAMAccountName."""
        uri = "ldaps://localhost:636" if mode == "ldaps" else "ldap://localhost:389"
        return {
            "uri": uri,
            "tls": mode,
            "ca_file": str(self.ca_file),
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "base": PEOPLE,
            "user_filter": f"(&(objectClass=user)(objectCategory=person)"
                           f"(sAMAccountName=%u){ENABLED})",
            "uid_attribute": "sAMAccountName",
            "timeout_secs": 10,
            "pool_size": 2,
            **overrides,
        }


@pytest.fixture(scope="module")
def samba_dc(tmp_path_factory):
    """One provisioned, running Samba AD DC for the module (see the module docstring)."""
    missing = [t for t in ("samba", "samba-tool", "ldbadd", "ldbmodify", "ldbsearch",
                           "ldapwhoami")
               if shutil.which(t) is None and not pathlib.Path("/usr/sbin", t).exists()]
    if missing:
        _unavailable(f"{', '.join(missing)} not found (Debian packages samba, ldb-tools, "
                     "ldap-utils)")
    if os.geteuid() != 0:
        _unavailable("a Samba domain controller runs as root")
    lock = open(LOCK_PATH, "a")  # noqa: SIM115 - held until teardown
    deadline = time.monotonic() + LOCK_TIMEOUT
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                pytest.fail(f"another test run held {LOCK_PATH} (ports 389/636) too long")
            time.sleep(0.5)
    try:
        busy = [p for p in (389, 636) if not _port_free(p)]
        if busy:
            pytest.fail(f"ports {busy} are in use: a Samba AD DC needs 389 and 636")
        dc = SambaDc(tmp_path_factory.mktemp("samba"))
        dc.provision()
        dc.start()
        try:
            yield dc
        finally:
            dc.stop()
    finally:
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
