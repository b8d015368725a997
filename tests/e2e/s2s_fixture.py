"""Federation peers for the server-to-server tests: a private DNS, a test CA, and real
Prosody and ejabberd servers.

``S2sNetwork`` plans a small federation on loopback: each domain gets its own address in a
/24 of 127.0.0.0/8 picked at random per network (so two test runs on one machine do not
meet), and a port for server-to-server streams chosen by the kernel. dnsmasq (Debian's
``dnsmasq-base``) answers for them on port 53 of the same /24's ``.53``: an A record for the
domain and each service subdomain (``conference.``, ``upload.``, ``pubsub.``, ``proxy.``),
and an ``_xmpp-server._tcp`` SRV record for each of those names pointing at the domain's
port, as an operator's zone would; names under ``.example`` that it was not given are
NXDOMAIN and nothing is forwarded upstream. ``.example`` rather than ``.test``: libunbound
(Prosody's resolver) answers ``.test`` itself with NXDOMAIN (RFC 6761 §6.2).

Prosody and ejabberd read the system resolver configuration: each is started in a private
mount namespace (``unshare --mount``) in which ``/etc/resolv.conf`` is a bind mount of one
naming that dnsmasq. The network namespace is the machine's, so loopback addresses stay
reachable, and the mount disappears with the process; nothing outside changes.

The network's CA (``ca``) is the one every peer trusts; ``untrusted_ca`` signs certificates
nobody trusts (a peer presenting one is authenticated by dialback, XEP-0220, if at all), and
``wrong_name_cert`` names a domain that is not the peer's.

``Prosody`` and ``Ejabberd`` each run one instance with a configuration, data and logs in
their own directory: the domain with users (``PASSWORD``), a MUC service on
``conference.DOMAIN``, client-to-server STARTTLS on ``127.0.0.1`` (so ``clients.login`` works
against them as against xmppd) and server-to-server on the domain's address. Accounts are
created with the servers' own tools (``prosodyctl register``, ``ejabberdctl register``).

Where a tool is missing or the tests do not run as root (a mount namespace needs it), the
tests skip with the reason, except under ``cargo xtask ci`` (``XMPPD_E2E_CI``) or a CI
service (``CI``), where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import random
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field

import pytest

from certs import Leaf, TestCa
from conftest import PASSWORD, must_run_here

SERVICES = ("conference", "upload", "pubsub", "proxy")
START_TIMEOUT = 90.0  # a cold Erlang VM on a loaded 2-core machine takes its time
STOP_TIMEOUT = 30.0
TOOL_TIMEOUT = 60.0
DNS_PORT = 53


def unavailable(why: str):
    if must_run_here():
        pytest.fail(f"federation tests cannot run: {why}")
    pytest.skip(f"federation tests skipped: {why} (cargo xtask ci installs the packages)")


def require_tools(*tools: str, packages: str) -> None:
    missing = [t for t in tools
               if shutil.which(t) is None and not pathlib.Path("/usr/sbin", t).exists()]
    if missing:
        unavailable(f"{', '.join(missing)} not found (Debian packages {packages})")


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def _bindable(address: str, port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((address, port))
            except OSError:
                return False
    return True


def wait_for(check, what: str, proc: subprocess.Popen | None, *logs: pathlib.Path,
             timeout: float = START_TIMEOUT) -> None:
    """Polls ``check()`` until true (a readiness probe, not a delay); fails early, with the
    logs' tails, if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"{what}: the process exited with {proc.returncode}:\n"
                        + "\n".join(tail(log) for log in logs))
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s:\n"
                        + "\n".join(tail(log) for log in logs))
        time.sleep(0.1)


def tail(log: pathlib.Path, lines: int = 60) -> str:
    if not log.exists():
        return ""
    text = "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return f"---- {log.name} ----\n{text}"


def accepts(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen | None) -> int | None:
    """SIGTERM, SIGKILL if the process does not end in time."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _stop_group(proc: subprocess.Popen | None) -> None:
    """SIGTERM to the process group ``proc`` leads (it was started with a session of its
    own), then waits until every member ended; SIGKILL to what is left after the timeout."""
    if proc is None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(STOP_TIMEOUT)
    wait_until = time.monotonic() + STOP_TIMEOUT
    while _group_alive(proc.pid) and time.monotonic() < wait_until:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)


# --- DNS -----------------------------------------------------------------------------------

def dns_query(server: str, name: str, qtype: int, timeout: float = 2.0,
              port: int = DNS_PORT) -> tuple[int, int]:
    """One query over UDP to ``server``:``port``; returns (rcode, number of answers)."""
    ident = random.randrange(1 << 16)
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split("."))
    packet = struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0) + question + b"\0" + \
        struct.pack(">HH", qtype, 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(packet, (server, port))
        while True:
            reply, _ = s.recvfrom(4096)
            rid, flags, _qd, answers = struct.unpack(">HHHH", reply[:8])
            if rid == ident:
                return flags & 0xF, answers


QTYPE_A, QTYPE_SRV = 1, 33


@dataclass
class Peer:
    """A domain of the network: its address and server-to-server port."""

    domain: str
    address: str
    s2s_port: int
    names: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.names = (self.domain, *(f"{s}.{self.domain}" for s in SERVICES))


class S2sNetwork:
    """Addresses, DNS and certificates for a federation of ``domains`` (see the module
    docstring). ``start()`` runs dnsmasq; ``stop()`` ends it."""

    def __init__(self, root: pathlib.Path, domains: list[str] | tuple[str, ...]) -> None:
        require_tools("dnsmasq", packages="dnsmasq-base")
        require_tools("unshare", "mount", packages="util-linux, mount")
        if os.geteuid() != 0:
            unavailable("a private mount namespace for the peers' resolver needs root")
        probe = subprocess.run([_tool("unshare"), "--mount", "true"], capture_output=True,
                               text=True, timeout=TOOL_TIMEOUT)
        if probe.returncode != 0:
            unavailable(f"no private mount namespace here: {probe.stderr.strip()}")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.prefix = self._free_prefix()
        self.dns_address = f"{self.prefix}53"
        self.peers = {d: Peer(d, f"{self.prefix}{i + 1}", 0) for i, d in enumerate(domains)}
        for peer in self.peers.values():
            peer.s2s_port = free_port(peer.address)
        self.resolv_conf = root / "resolv.conf"
        self.resolv_conf.write_text(f"nameserver {self.dns_address}\noptions timeout:2\n")
        self.ca = TestCa("xmppd federation test CA")
        self.ca_file = self.ca.write(root / "ca.pem")
        self.untrusted_ca = TestCa("a CA nobody trusts")
        # For a server that must trust none of the peers: it trusts only this CA.
        self.untrusted_ca_file = self.untrusted_ca.write(root / "untrusted-ca.pem")
        self.certs_dir = root / "certs"
        self.log = root / "dnsmasq.log"
        self.proc: subprocess.Popen | None = None

    @staticmethod
    def _free_prefix() -> str:
        for _ in range(50):
            prefix = f"127.{random.randrange(100, 250)}.{random.randrange(256)}."
            if _bindable(f"{prefix}53", DNS_PORT):
                return prefix
        pytest.fail("no free /24 in 127.0.0.0/8 for the federation's addresses")

    # --- certificates ----------------------------------------------------------------------

    def cert(self, domain: str, *, trusted: bool = True) -> Leaf:
        """A certificate for ``domain`` and its service subdomains, from the trusted CA or
        from one nobody trusts."""
        ca = self.ca if trusted else self.untrusted_ca
        names = [domain, *(f"{s}.{domain}" for s in SERVICES)]
        stem = domain if trusted else f"{domain}.untrusted"
        return ca.issue(names, self.certs_dir, stem=stem)

    def wrong_name_cert(self, name: str = "wrong.example") -> Leaf:
        """A certificate from the trusted CA for a name that is not a peer's."""
        return self.ca.issue([name], self.certs_dir)

    # --- DNS -------------------------------------------------------------------------------

    def _dnsmasq_conf(self) -> str:
        lines = [
            f"port={DNS_PORT}", f"listen-address={self.dns_address}", "bind-interfaces",
            "no-resolv", "no-hosts", "pid-file=", "log-facility=-", "log-queries",
            # Authoritative for the test names: never forwarded, unknown ones are NXDOMAIN.
            "local=/example/",
        ]
        for peer in self.peers.values():
            lines.append(f"host-record={','.join(peer.names)},{peer.address}")
            lines.extend(f"srv-host=_xmpp-server._tcp.{name},{peer.domain},{peer.s2s_port},0,5"
                         for name in peer.names)
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        conf = self.root / "dnsmasq.conf"
        conf.write_text(self._dnsmasq_conf())
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the process
        # -k: in the foreground, so the fixture owns the process.
        self.proc = subprocess.Popen([_tool("dnsmasq"), "-k", "-C", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.close()
        first = next(iter(self.peers.values()))

        def answers() -> bool:
            try:
                return dns_query(self.dns_address, f"_xmpp-server._tcp.{first.domain}",
                                 QTYPE_SRV, timeout=0.5) == (0, 1)
            except OSError:
                return False

        wait_for(answers, "dnsmasq answering", self.proc, self.log)

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def in_namespace(self, argv: list[str]) -> list[str]:
        """``argv`` run in a private mount namespace whose /etc/resolv.conf names the
        network's DNS server. The shell execs the command, so the process started is the
        command itself (signals reach it)."""
        return [_tool("unshare"), "--mount", "--propagation", "private", "--",
                "/bin/sh", "-c", 'mount --bind "$0" /etc/resolv.conf && exec "$@"',
                str(self.resolv_conf), *argv]


@contextlib.contextmanager
def running(*servers):
    """Starts each server, yields, and stops them all whatever happened."""
    started = []
    try:
        for server in servers:
            started.append(server)
            server.start()
        yield servers
    finally:
        for server in reversed(started):
            server.stop()


class PeerServer:
    """What the peers share: a domain of the network with its chat service, a directory of
    their own, a certificate (from the network's CA if ``trusted``), client STARTTLS on
    127.0.0.1."""

    software = ""
    log: pathlib.Path

    def __init__(self, net: S2sNetwork, domain: str, users: tuple[str, ...],
                 trusted: bool) -> None:
        self.net = net
        self.domain = domain
        self.peer = net.peers[domain]
        self.muc = f"conference.{domain}"
        self.users = users
        self.dir = net.root / f"{self.software}-{domain}"
        self.dir.mkdir(parents=True)
        self.cert = net.cert(domain, trusted=trusted)
        self.starttls_port = free_port()
        self.proc: subprocess.Popen | None = None

    def jid(self, user: str) -> str:
        return f"{user}@{self.domain}"

    def output(self) -> str:
        return tail(self.log, 400)

    def s2s_auth(self) -> set[tuple[str, str, str]]:
        raise NotImplementedError

    async def s2s_auth_of(self, names, expected: set[tuple[str, str, str]],
                          timeout: float = 15.0) -> set[tuple[str, str, str]]:
        """``s2s_auth()`` of the streams with ``names``, once it includes ``expected`` or
        ``timeout`` passed: a server writes its log a little after the event (ejabberd
        buffers it for up to seconds)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = {a for a in self.s2s_auth() if a[1] in names}
            if expected <= found or loop.time() > deadline:
                return found
            await asyncio.sleep(0.2)

    def _wait_listening(self, *logs: pathlib.Path) -> None:
        wait_for(lambda: accepts("127.0.0.1", self.starttls_port)
                 and accepts(self.peer.address, self.peer.s2s_port),
                 f"{self.software} listening", self.proc, *logs)


# --- Prosody -------------------------------------------------------------------------------

def _lua(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "{ " + "; ".join(_lua(v) for v in value) + " }"
    if isinstance(value, dict):
        return "{ " + "; ".join(f"{k} = {_lua(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as Lua")


class Prosody(PeerServer):
    """One Prosody instance (see the module docstring).

    ``secure_auth``: ``s2s_secure_auth``, a peer must present a certificate this instance
    trusts (SASL EXTERNAL, XEP-0178), except the ``insecure_domains``; the others may use
    dialback. ``trusted``: whether this instance's own certificate comes from the network's
    CA. ``bidi``: bidirectional streams (XEP-0288, Prosody's ``s2s_bidi`` module).
    ``modules`` adds Prosody modules to the ones every instance loads."""

    software = "prosody"

    def __init__(self, net: S2sNetwork, domain: str, *, users=("alice", "bob"),
                 secure_auth: bool = True, insecure_domains: tuple[str, ...] = (),
                 trusted: bool = True, bidi: bool = False,
                 modules: tuple[str, ...] = ()) -> None:
        require_tools("prosody", "prosodyctl", packages="prosody, lua-unbound")
        super().__init__(net, domain, users, trusted)
        (self.dir / "data").mkdir()
        self.log = self.dir / "prosody.log"
        self.config_path = self.dir / "prosody.cfg.lua"
        ssl = {"certificate": str(self.cert.cert), "key": str(self.cert.key),
               "cafile": str(net.ca_file)}
        settings = {
            # The tests run as root; the data directory is the test's own.
            "run_as_root": True,
            "pidfile": str(self.dir / "prosody.pid"),
            "data_path": str(self.dir / "data"),
            "log": {"debug": str(self.log)},
            "modules_enabled": ["roster", "saslauth", "tls", "dialback", "disco", "ping",
                                *(["s2s_bidi"] if bidi else []), *modules],
            "c2s_ports": [self.starttls_port],
            "c2s_interfaces": ["127.0.0.1"],
            "c2s_direct_tls_ports": [],
            "s2s_ports": [self.peer.s2s_port],
            "s2s_interfaces": [self.peer.address],
            "s2s_direct_tls_ports": [],
            "s2s_require_encryption": True,
            "s2s_secure_auth": secure_auth,
            "s2s_insecure_domains": list(insecure_domains),
            "authentication": "internal_hashed",
            "storage": "internal",
            "ssl": ssl,
        }
        body = "".join(f"{k} = {_lua(v)}\n" for k, v in settings.items())
        body += f'VirtualHost "{domain}"\n    ssl = {_lua(ssl)}\n'
        body += f'Component "{self.muc}" "muc"\n    ssl = {_lua(ssl)}\n'
        self.config_path.write_text(body)

    def register(self, user: str, password: str = PASSWORD) -> None:
        result = subprocess.run(
            [_tool("prosodyctl"), "--config", str(self.config_path), "register", user,
             self.domain, password],
            capture_output=True, text=True, timeout=TOOL_TIMEOUT)
        if result.returncode != 0:
            pytest.fail(f"prosodyctl register {user} failed ({result.returncode}):\n"
                        f"{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        for user in self.users:
            self.register(user)
        out = open(self.dir / "prosody.out", "ab")  # noqa: SIM115 - handed to the process
        self.proc = subprocess.Popen(
            self.net.in_namespace([_tool("prosody"), "--config", str(self.config_path), "-F"]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        out.close()
        self._wait_listening(self.log, self.dir / "prosody.out")

    def stop(self) -> None:
        _stop(self.proc)
        self.proc = None

    def s2s_auth(self) -> set[tuple[str, str, str]]:
        """How each server-to-server stream was authenticated, from the debug log, as
        ``(direction, remote domain, "EXTERNAL" or "dialback")``, direction ``in`` or
        ``out``. A stream counts once it is authenticated; it used SASL EXTERNAL if the
        SASL ``<success/>`` passed on it, else dialback."""
        sessions: dict[str, list[str]] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            m = PROSODY_SESSION_LINE.match(line)
            if m:
                sessions.setdefault(m.group(1), []).append(m.group(2))
        found = set()
        for sid, lines in sessions.items():
            direction = "in" if sid.startswith("s2sin") else "out"
            for text in lines:
                done = PROSODY_AUTHENTICATED.match(text)
                if done:
                    sasl = any(t.startswith(("Sending[s2sin_unauthed]: <success",
                                             "Received[s2sout_unauthed]: <success"))
                               for t in lines)
                    found.add((direction, done.group(1), "EXTERNAL" if sasl else "dialback"))
        return found


# A line of a Prosody session's log ("Dec 07 02:09:17 s2sin55bb3cac6750\tdebug\tmessage").
PROSODY_SESSION_LINE = re.compile(r"^\w{3} +\d+ [\d:]+ (s2s(?:in|out)[0-9a-f]+)\t\w+\t(.*)$")
PROSODY_AUTHENTICATED = re.compile(r"^connection \S+ is now authenticated for (\S+)")
EJABBERD_AUTHENTICATED = re.compile(
    r"Accepted (inbound|outbound) s2s (EXTERNAL|dialback) authentication (\S+) -> (\S+)")


# --- ejabberd ------------------------------------------------------------------------------

def _yaml(value) -> str:
    """ejabberd's configuration is YAML, of which JSON is a subset."""
    return json.dumps(value, indent=2)


class Ejabberd(PeerServer):
    """One ejabberd instance (see the module docstring), an Erlang node of its own: a random
    node name and cookie, and no epmd (the node listens on a fixed distribution port that
    ``ejabberdctl`` is told), so nothing is left running and two instances never meet.

    ``trusted``: whether this instance's own certificate comes from the network's CA.
    ``modules`` adds ejabberd modules (name to options) to the ones every instance has, and
    ``options`` adds or overrides top-level settings."""

    software = "ejabberd"

    def __init__(self, net: S2sNetwork, domain: str, *, users=("alice", "bob"),
                 trusted: bool = True, modules: dict | None = None,
                 options: dict | None = None) -> None:
        require_tools("ejabberdctl", "erl", packages="ejabberd")
        super().__init__(net, domain, users, trusted)
        (self.dir / "spool").mkdir()
        (self.dir / "logs").mkdir()
        self.log = self.dir / "logs" / "ejabberd.log"
        self.config_path = self.dir / "ejabberd.yml"
        self.node = f"xmppd_e2e_{secrets.token_hex(4)}@localhost"
        self.dist_port = free_port()
        cookie = secrets.token_hex(16)
        config = {
            "hosts": [domain],
            "loglevel": "debug",
            "log_rotate_count": 0,
            "certfiles": [str(self.cert.combined)],
            "ca_file": str(net.ca_file),
            "listen": [
                {"port": self.starttls_port, "ip": "127.0.0.1", "module": "ejabberd_c2s",
                 "starttls_required": True},
                {"port": self.peer.s2s_port, "ip": self.peer.address,
                 "module": "ejabberd_s2s_in"},
            ],
            "s2s_use_starttls": "required",
            "outgoing_s2s_families": ["ipv4"],
            "auth_method": "internal",
            "default_db": "mnesia",
            "modules": {
                "mod_disco": {},
                "mod_ping": {},
                "mod_roster": {},
                "mod_s2s_dialback": {},
                "mod_muc": {"host": f"conference.{domain}", "access_create": "all",
                            "access_persistent": "all"},
                **(modules or {}),
            },
            **(options or {}),
        }
        self.config_path.write_text(_yaml(config))
        # ejabberdctl's own settings: run as the current user (root here) rather than
        # switching to the package's system user, which could not enter the test's directory.
        self.ctl_config = self.dir / "ejabberdctl.cfg"
        self.ctl_config.write_text(
            "EXEC_CMD=as_current_user\n"
            f"ERLANG_NODE={self.node}\n"
            f"ERL_DIST_PORT={self.dist_port}\n"
            f'ERL_OPTIONS="-setcookie {cookie}"\n'
            "EJABBERD_BYPASS_WARNINGS=true\n")
        self.env = {**os.environ, "HOME": str(self.dir)}

    def _ctl_args(self) -> list[str]:
        return [_tool("ejabberdctl"), "--config-dir", str(self.dir), "--ctl-config",
                str(self.ctl_config), "--config", str(self.config_path), "--spool",
                str(self.dir / "spool"), "--logs", str(self.dir / "logs"), "--node", self.node]

    def ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self._ctl_args(), *args], capture_output=True, text=True,
                                timeout=TOOL_TIMEOUT, env=self.env, cwd=self.dir)
        if check and result.returncode != 0:
            pytest.fail(f"ejabberdctl {' '.join(args[:2])} failed ({result.returncode}):\n"
                        f"{result.stdout}\n{result.stderr}\n{tail(self.log)}")
        return result

    def start(self) -> None:
        out = open(self.dir / "ejabberd.out", "ab")  # noqa: SIM115 - handed to the process
        # Its own process group: ejabberdctl's shell, the Erlang VM and its helpers.
        self.proc = subprocess.Popen(
            self.net.in_namespace([*self._ctl_args(), "foreground"]),
            stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=self.env, cwd=self.dir,
            start_new_session=True)
        out.close()

        def started() -> bool:
            return self.log.exists() and " is started in the node " in self.log.read_text(
                errors="replace")

        logs = (self.log, self.dir / "ejabberd.out")
        wait_for(started, "ejabberd started", self.proc, *logs)
        self._wait_listening(*logs)
        for user in self.users:
            self.ctl("register", user, self.domain, PASSWORD)

    def stop(self) -> None:
        # The Erlang VM stops cleanly on SIGTERM (init:stop), as on `ejabberdctl stop`,
        # without starting a second VM to ask it.
        _stop_group(self.proc)
        self.proc = None

    def s2s_auth(self) -> set[tuple[str, str, str]]:
        """As ``Prosody.s2s_auth``, from ejabberd's log of accepted authentications."""
        found = set()
        for m in EJABBERD_AUTHENTICATED.finditer(self.log.read_text(errors="replace")):
            inbound = m.group(1) == "inbound"
            found.add(("in" if inbound else "out", m.group(3) if inbound else m.group(4),
                       m.group(2)))
        return found


# --- xmppd ---------------------------------------------------------------------------------

def xmppd_overrides(net: S2sNetwork, domain: str, *, trusted: bool = True,
                    cert: Leaf | None = None, **s2s) -> dict:
    """The configuration of an xmppd serving ``domain`` of the network: its certificate
    (``cert``, by default one from the network's CA if ``trusted``), server-to-server on the
    domain's address and port, resolving through the network's DNS. It trusts the network's
    CA if ``trusted``, else only a CA that signed none of the peers. ``s2s`` adds or
    overrides keys of ``[s2s]``."""
    peer = net.peers[domain]
    cert = cert or net.cert(domain, trusted=trusted)
    return {
        "server": {"hosts": [domain], "log_level": "debug"},
        "tls": {"certificate": [{"domain": domain, "cert": str(cert.cert),
                                 "key": str(cert.key)}]},
        "s2s": {
            "enabled": True,
            "listen": [f"{peer.address}:{peer.s2s_port}"],
            "resolver": f"{net.dns_address}:{DNS_PORT}",
            "ca_file": str(net.ca_file if trusted else net.untrusted_ca_file),
            # The network's addresses are loopback ones, which xmppd refuses from DNS unless
            # told otherwise (docs/S2S.md).
            "allow_private_addresses": True,
            **s2s,
        },
    }


def start_xmppd(make_server, net: S2sNetwork, domain: str, *, users=("alice", "bob"),
                trusted: bool = True, cert: Leaf | None = None, **s2s):
    """``make_server`` for ``domain`` of the network (``xmppd_overrides``), returned once its
    server-to-server listener accepts connections."""
    server = make_server(users=users, **xmppd_overrides(net, domain, trusted=trusted,
                                                        cert=cert, **s2s))
    peer = net.peers[domain]
    wait_for(lambda: accepts(peer.address, peer.s2s_port), "xmppd's s2s listener",
             server.proc)
    return server
