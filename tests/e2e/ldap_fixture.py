"""A real OpenLDAP server (slapd) for the LDAP tests, on loopback ports chosen at start.

Each ``Slapd`` gets its own slapd.conf, mdb database and (with ``tls=True``) a freshly made CA
and server certificate, in the test's tmp directory. The directory is seeded with slapadd:

- ``cn=xmppd,ou=services,dc=example,dc=org``: the service account xmppd searches as;
- ``uid=NAME,ou=people,dc=example,dc=org``: users (inetOrgPerson, ``{SSHA}`` passwords);
- ``cn=jabberadmins`` and ``cn=staff`` (groupOfNames), ``cn=ops`` (posixGroup, memberUid)
  under ``ou=groups``.

Only the service account and the users themselves can read anything; anonymous clients can
only bind, as in a real deployment. ``cargo xtask ci`` installs slapd when it is missing.
"""

from __future__ import annotations

import base64
import hashlib
import os
import pathlib
import shutil
import socket
import subprocess
import time

import pytest

from certs import TestCa

BASE = "dc=example,dc=org"
SERVICE_DN = f"cn=xmppd,ou=services,{BASE}"
SERVICE_PASSWORD = "service secret"
ROOT_DN = f"cn=admin,{BASE}"
ROOT_PASSWORD = "root secret"
MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/x86_64-linux-gnu/ldap", "/usr/lib/aarch64-linux-gnu/ldap")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
START_TIMEOUT = 10.0

# name -> password; the groups below refer to these names.
USERS = {
    "alice": "alice password",
    "bob": "bob password",
    "carol": "carol password",
    "dave": "dave password",
}
ADMINS = ("alice",)
STAFF = ("alice", "bob")
OPS = ("carol", "dave")


def ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def user_ldif(name: str, password: str) -> str:
    return (
        f"dn: uid={name},ou=people,{BASE}\nobjectClass: inetOrgPerson\nuid: {name}\n"
        f"cn: {name.title()}\nsn: {name.title()}\nuserPassword: {ssha(password)}\n"
    )


def seed_ldif() -> str:
    entries = [
        f"dn: {BASE}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n",
        *(f"dn: ou={ou},{BASE}\nobjectClass: organizationalUnit\nou: {ou}\n"
          for ou in ("people", "services", "groups")),
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: xmppd\nuserPassword: {ssha(SERVICE_PASSWORD)}\n",
        *(user_ldif(name, pw) for name, pw in USERS.items()),
    ]
    for cn, members in (("jabberadmins", ADMINS), ("staff", STAFF)):
        lines = "".join(f"member: uid={m},ou=people,{BASE}\n" for m in members)
        entries.append(f"dn: cn={cn},ou=groups,{BASE}\nobjectClass: groupOfNames\ncn: {cn}\n{lines}")
    uids = "".join(f"memberUid: {m}\n" for m in OPS)
    entries.append(
        f"dn: cn=ops,ou=groups,{BASE}\nobjectClass: posixGroup\ncn: ops\ngidNumber: 5000\n{uids}"
    )
    return "\n".join(entries)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def module_dir() -> str:
    for d in MODULE_DIRS:
        if pathlib.Path(d, "back_mdb.so").exists() or pathlib.Path(d, "back_mdb.la").exists():
            return d
    return MODULE_DIRS[0]


class Slapd:
    """One slapd process and its directory; ``stop``/``start`` keep the data."""

    def __init__(self, tmp: pathlib.Path, *, tls: bool = False) -> None:
        for tool in ("slapd", "slapadd", "ldapadd", "ldapdelete", "ldapmodify"):
            if shutil.which(tool) is None and not pathlib.Path("/usr/sbin", tool).exists():
                pytest.fail(f"{tool} not found: install slapd and ldap-utils "
                            "(cargo xtask ci does when slapd is missing)")
        self.dir = tmp / "slapd"
        (self.dir / "db").mkdir(parents=True)
        self.port = free_port()
        self.uri = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_port = free_port() if tls else 0
        self.ca_file = self.dir / "ca.pem" if tls else None
        self.proc: subprocess.Popen | None = None
        tls_lines = ""
        if tls:
            cert, key = self._make_certificates()
            tls_lines = (f"TLSCACertificateFile {self.ca_file}\nTLSCertificateFile {cert}\n"
                         f"TLSCertificateKeyFile {key}\n")
        schemas = "".join(f"include /etc/ldap/schema/{s}.schema\n" for s in SCHEMAS)
        self.conf = self.dir / "slapd.conf"
        self.conf.write_text(
            f"{schemas}pidfile {self.dir}/slapd.pid\nmodulepath {module_dir()}\n"
            f"moduleload back_mdb\n{tls_lines}"
            f"database mdb\nmaxsize 16777216\nsuffix \"{BASE}\"\nrootdn \"{ROOT_DN}\"\n"
            f"rootpw \"{ROOT_PASSWORD}\"\ndirectory {self.dir}/db\n"
            "access to attrs=userPassword by self write by anonymous auth by * none\n"
            "access to * by users read by * none\n"
        )
        seed = self.dir / "seed.ldif"
        seed.write_text(seed_ldif())
        self._run("slapadd", "-f", str(self.conf), "-l", str(seed))

    def _make_certificates(self) -> tuple[pathlib.Path, pathlib.Path]:
        cert, key = self.dir / "server.pem", self.dir / "server.key"
        ca_pem, _ = make_ca_signed_cert("xmppd test LDAP CA", cert, key)
        assert self.ca_file is not None
        self.ca_file.write_bytes(ca_pem)
        return cert, key

    @property
    def ldaps_uri(self) -> str:
        # The certificate names "localhost": verification needs that name in the URI.
        return f"ldaps://localhost:{self.ldaps_port}"

    def _run(self, *args: str, input: str | None = None) -> None:
        result = subprocess.run(args, input=input, capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(args[:2])} failed ({result.returncode}): {result.stderr}")

    def start(self) -> None:
        urls = f"ldap://127.0.0.1:{self.port}/"
        if self.ldaps_port:
            urls += f" ldaps://127.0.0.1:{self.ldaps_port}/"
        log = open(self.dir / "slapd.log", "ab")  # noqa: SIM115 - handed to the process
        # -d 0 keeps slapd in the foreground (no fork), so the fixture owns the process.
        self.proc = subprocess.Popen(["slapd", "-f", str(self.conf), "-h", urls, "-d", "0"],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"slapd exited with {self.proc.returncode}: "
                            f"{(self.dir / 'slapd.log').read_text(errors='replace')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        pytest.fail("slapd did not start listening in time")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    # --- changing the directory while it runs -------------------------------------------

    def _admin(self, tool: str, *args: str, input: str | None = None) -> None:
        self._run(tool, "-x", "-H", self.uri, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *args,
                  input=input)

    def delete_user(self, name: str) -> None:
        self._admin("ldapdelete", f"uid={name},ou=people,{BASE}")

    def set_password(self, name: str, password: str) -> None:
        self._admin("ldapmodify", input=(
            f"dn: uid={name},ou=people,{BASE}\nchangetype: modify\nreplace: userPassword\n"
            f"userPassword: {ssha(password)}\n"))

    def change_group(self, cn: str, op: str, attribute: str, value: str) -> None:
        """``op`` (``add`` or ``delete``) one value of ``attribute`` of ``cn=CN,ou=groups``."""
        self._admin("ldapmodify", input=(
            f"dn: cn={cn},ou=groups,{BASE}\nchangetype: modify\n{op}: {attribute}\n"
            f"{attribute}: {value}\n"))

    def ldap_config(self, **overrides) -> dict:
        """The ``[ldap]`` section for xmppd pointing at this server."""
        return {
            "uri": self.uri,
            "tls": "none",
            "bind_dn": SERVICE_DN,
            "bind_password": SERVICE_PASSWORD,
            "base": BASE,
            "user_filter": "(&(objectClass=inetOrgPerson)(uid=%u))",
            "timeout_secs": 2,
            "pool_size": 2,
            **overrides,
        }


def make_ca_signed_cert(ca_name: str, cert_path: pathlib.Path, key_path: pathlib.Path
                        ) -> tuple[bytes, bytes]:
    """A new CA and a certificate it signs for localhost/127.0.0.1 (written to the paths).
    Returns the CA certificate and key as PEM."""
    ca = TestCa(ca_name)
    cert_pem, key_pem = ca.issue_pem(["localhost"], ips=("127.0.0.1",))
    cert_path.write_bytes(cert_pem)
    key_path.write_bytes(key_pem)
    return ca.pem, ca.key_pem


@pytest.fixture
def slapd(tmp_path):
    """A running slapd with the seeded directory (plain LDAP on loopback)."""
    server = Slapd(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def slapd_tls(tmp_path):
    """A running slapd that also speaks StartTLS and ldaps, with a test CA (``ca_file``)."""
    server = Slapd(tmp_path, tls=True)
    server.start()
    yield server
    server.stop()
