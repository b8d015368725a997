"""External service discovery (XEP-0215): the configured STUN and TURN servers, and TURN
credentials (the time-limited HMAC-SHA1 scheme) that a real coturn, sharing the secret,
accepts for an allocation (turnutils_uclient), while a wrong password is refused."""

import datetime
import os
import pathlib
import secrets
import shutil
import socket
import subprocess
import time

import pytest

from clients import async_test, login, q, stanza_error

EXTDISCO = "urn:xmpp:extdisco:2"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stun_answers(port: int) -> bool:
    """A STUN binding request (RFC 8489 §5) answered: the server is up."""
    request = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + secrets.token_bytes(12)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        s.sendto(request, ("127.0.0.1", port))
        try:
            data, _ = s.recvfrom(2048)
        except OSError:
            return False
        return data[8:20] == request[8:20]


class Coturn:
    def __init__(self, tmp: pathlib.Path) -> None:
        self.secret = secrets.token_hex(16)
        self.port = _free_udp_port()
        self.log = tmp / "turnserver.log"
        relay = _free_udp_port()
        self.proc = subprocess.Popen(
            ["turnserver", "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1",
             f"--listening-port={self.port}", f"--min-port={relay}", f"--max-port={relay + 40}",
             "--use-auth-secret", f"--static-auth-secret={self.secret}", "--realm=localhost",
             "--no-tls", "--no-dtls", "--no-cli", "--allow-loopback-peers",
             f"--userdb={tmp / 'turndb'}", f"--pidfile={tmp / 'turnserver.pid'}",
             f"--log-file={self.log}", "--simple-log"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not _stun_answers(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"turnserver did not start:\n{self.read_log()}")

    def read_log(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def allocate(self, username: str, password: str) -> subprocess.CompletedProcess:
        """Two allocations relaying to each other (turnutils_uclient -y)."""
        return subprocess.run(
            ["turnutils_uclient", "-y", "-n", "2", "-p", str(self.port), "-u", username,
             "-w", password, "127.0.0.1"],
            capture_output=True, text=True, timeout=60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def coturn(tmp_path):
    missing = [t for t in ("turnserver", "turnutils_uclient") if shutil.which(t) is None]
    if missing:
        if os.environ.get("XMPPD_E2E_CI"):
            pytest.fail(f"coturn is not installed ({', '.join(missing)} missing)")
        pytest.skip("coturn is not installed (cargo xtask ci installs it)")
    server = Coturn(tmp_path)
    yield server
    server.stop()


def services_of(reply) -> list:
    return list(reply.iter(q(EXTDISCO, "service")))


@async_test(timeout=150)
async def test_turn_credentials_accepted_by_coturn(make_server, coturn):
    server = make_server(extdisco={"service": [
        {"type": "stun", "host": "127.0.0.1", "port": coturn.port},
        {"type": "turn", "host": "127.0.0.1", "port": coturn.port, "transport": "udp",
         "secret": coturn.secret},
    ]})
    alice = await login(server, "alice")
    info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to="localhost")
    assert EXTDISCO in {f.get("var") for f in info.iter(q(DISCO_INFO, "feature"))}

    reply = await alice.iq("get", f"<services xmlns='{EXTDISCO}'/>", to="localhost")
    assert reply.get("type") == "result", reply
    kinds = {s.get("type"): s for s in services_of(reply)}
    assert set(kinds) == {"stun", "turn"}
    assert kinds["stun"].get("username") is None, "STUN needs no credentials"
    turn = kinds["turn"]
    assert (turn.get("host"), turn.get("port"), turn.get("transport")) == \
        ("127.0.0.1", str(coturn.port), "udp")

    reply = await alice.iq("get", f"<services xmlns='{EXTDISCO}' type='turn'/>", to="localhost")
    assert [s.get("type") for s in services_of(reply)] == ["turn"]

    # XEP-0215 §3.3: credentials for the one service named.
    reply = await alice.iq("get", f"<credentials xmlns='{EXTDISCO}'><service "
                                  f"host='127.0.0.1' type='turn'/></credentials>", to="localhost")
    assert reply.get("type") == "result", reply
    [service] = services_of(reply)
    username, password = service.get("username"), service.get("password")
    expiry, user = username.split(":", 1)
    assert user == "alice@localhost"
    expires = datetime.datetime.fromisoformat(service.get("expires").replace("Z", "+00:00"))
    assert int(expires.timestamp()) == int(expiry)
    assert expires > datetime.datetime.now(datetime.timezone.utc)

    ok = coturn.allocate(username, password)
    assert ok.returncode == 0, f"coturn refused issued credentials:\n{ok.stdout}{ok.stderr}"
    wrong_password = ("B" if password[0] == "A" else "A") + password[1:]
    wrong = coturn.allocate(username, wrong_password)
    assert wrong.returncode != 0, "coturn accepted a wrong password"
    assert "Cannot complete Allocation" in wrong.stdout + wrong.stderr


@async_test()
async def test_credentials_for_an_unknown_service(make_server):
    server = make_server(extdisco={"service": [
        {"type": "turn", "host": "turn.localhost", "port": 3478, "secret": "x" * 16},
    ]})
    alice = await login(server, "alice")
    reply = await alice.iq("get", f"<credentials xmlns='{EXTDISCO}'><service "
                                  f"host='elsewhere.example' type='turn'/></credentials>",
                           to="localhost")
    assert stanza_error(reply) == "item-not-found", reply
    reply = await alice.iq("set", f"<services xmlns='{EXTDISCO}'/>", to="localhost")
    assert reply.get("type") == "error"
