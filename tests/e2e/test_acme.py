"""ACME (RFC 8555): xmppd obtains its certificate from a real ACME server, Debian's pebble,
which really validates the http-01 challenge by fetching it from xmppd's HTTP listener (its
always-valid shortcut is off), the name resolved through a real DNS server (dnsmasq) on
loopback. The certificate covers the host and its service subdomains, is then served on
direct TLS (XEP-0368) and chains to pebble's root, and is kept across a restart without a new
order. A server whose challenge pebble cannot fetch gets no certificate and keeps serving."""

import json
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request

import pytest

from ldap_fixture import make_ca_signed_cert
from s2s_fixture import QTYPE_A, dns_query

DOMAIN = "acme.test"
ORDER_TIMEOUT = 120


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        if os.environ.get("XMPPD_E2E_CI"):
            pytest.fail(f"{program} is not installed (cargo xtask ci installs it)")
        pytest.skip(f"{program} is not installed")
    return path


def _wait_until(what: str, check, proc: subprocess.Popen, log: pathlib.Path,
                timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            text = log.read_text(errors="replace") if log.exists() else ""
            pytest.fail(f"{what} did not start:\n{text}")
        time.sleep(0.1)


def _resolves(port: int, name: str) -> bool:
    """Whether the DNS server on 127.0.0.1:port answers an A record for ``name``."""
    try:
        return dns_query("127.0.0.1", name, QTYPE_A, timeout=0.5, port=port) == (0, 1)
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _connects(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class Pebble:
    """dnsmasq answering DOMAIN and its subdomains with 127.0.0.1, and pebble resolving
    through it and validating http-01 challenges on ``http_port``."""

    def __init__(self, tmp: pathlib.Path) -> None:
        dnsmasq, pebble = _require("dnsmasq"), _require("pebble")
        self.dns_log = tmp / "dnsmasq.log"
        # dnsmasq binds the port on UDP and TCP: a port free on UDP may be taken on TCP, and
        # dnsmasq then exits. Try another port, and start pebble only once names resolve.
        for _ in range(5):
            self.dns_port = _free_port(socket.SOCK_DGRAM)
            self.dns = subprocess.Popen(
                [dnsmasq, "--keep-in-foreground", "--conf-file=/dev/null", "--no-resolv",
                 "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1",
                 f"--port={self.dns_port}", f"--address=/{DOMAIN}/127.0.0.1", "--user=root",
                 "--pid-file=", f"--log-facility={self.dns_log}", "--log-queries"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while self.dns.poll() is None and not _resolves(self.dns_port, DOMAIN):
                if time.monotonic() > deadline:
                    _stop(self.dns)
                    pytest.fail("dnsmasq did not answer within 30 s")
                time.sleep(0.1)
            if self.dns.poll() is None:
                break
        else:
            log = self.dns_log.read_text(errors="replace") if self.dns_log.exists() else ""
            pytest.fail(f"dnsmasq did not start on any of five ports:\n{log}")
        self.tls_cert, tls_key = tmp / "pebble-cert.pem", tmp / "pebble-key.pem"
        self.ca_file = tmp / "pebble-listener-ca.pem"
        ca, _ = make_ca_signed_cert("xmppd ACME test CA", self.tls_cert, tls_key)
        self.ca_file.write_bytes(ca)
        self.port, self.management_port = _free_port(), _free_port()
        self.http_port, self.tls_port = _free_port(), _free_port()
        config = tmp / "pebble.json"
        config.write_text(json.dumps({"pebble": {
            "listenAddress": f"127.0.0.1:{self.port}",
            "managementListenAddress": f"127.0.0.1:{self.management_port}",
            "certificate": str(self.tls_cert), "privateKey": str(tls_key),
            "httpPort": self.http_port, "tlsPort": self.tls_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
        self.log = tmp / "pebble.log"
        env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0")
        env.pop("PEBBLE_VA_ALWAYS_VALID", None)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [pebble, "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env)
        _wait_until("pebble", lambda: _connects(self.port) and _connects(self.management_port),
                    self.proc, self.log)

    @property
    def directory_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def root_pem(self) -> str:
        """The root pebble generated at its start; its certificates chain to it."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        url = f"https://127.0.0.1:{self.management_port}/roots/0"
        with urllib.request.urlopen(url, context=context, timeout=30) as answer:
            return answer.read().decode()

    def stop(self) -> None:
        _stop(self.proc)
        _stop(self.dns)


@pytest.fixture
def pebble(tmp_path):
    server = Pebble(tmp_path)
    yield server
    server.stop()


def acme_server(make_server, pebble: Pebble, http_port: int):
    return make_server(
        server={"hosts": [DOMAIN]},
        http={"enabled": True, "listen": [f"127.0.0.1:{http_port}"]},
        acme={"enabled": True, "directory_url": pebble.directory_url,
              "contact": [f"mailto:hostmaster@{DOMAIN}"], "ca_file": str(pebble.ca_file),
              "retry_interval_secs": 3600},
        users=(),
    )


def served_certificate(port: int, cafile: pathlib.Path) -> dict:
    """Direct TLS to xmppd as DOMAIN, verified against ``cafile``: the peer certificate."""
    context = ssl.create_default_context(cafile=str(cafile))
    context.set_alpn_protocols(["xmpp-client"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        with context.wrap_socket(raw, server_hostname=DOMAIN) as tls:
            return tls.getpeercert()


def test_a_certificate_is_obtained_served_and_kept(make_server, pebble, tmp_path):
    server = acme_server(make_server, pebble, pebble.http_port)
    server.wait_for_log_blocking("ACME: certificate obtained and installed", timeout=ORDER_TIMEOUT)
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    # Verified against pebble's root for the host's name: the ACME certificate is served.
    cert = served_certificate(server.direct_tls_port, root)
    names = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
    assert {DOMAIN, f"conference.{DOMAIN}", f"pubsub.{DOMAIN}"} <= names, names
    # pebble resolved the names through dnsmasq and fetched each challenge from xmppd itself.
    fetched = [line for line in server.output().splitlines()
               if 'path="/.well-known/acme-challenge/' in line and "status=200" in line]
    assert len(fetched) >= 3, server.output()
    assert f"query[A] conference.{DOMAIN}" in pebble.dns_log.read_text(errors="replace")
    stored = server.data_dir / "acme" / DOMAIN / "certificate.pem"
    assert stored.stat().st_mode & 0o777 == 0o600
    # After a restart the stored certificate serves at once, and is found up to date.
    since = server.line_count()
    server.restart()
    assert served_certificate(server.direct_tls_port, root)["serialNumber"] == \
        cert["serialNumber"]
    server.wait_for_log_blocking("ACME: certificate up to date", since_line=since, timeout=ORDER_TIMEOUT)
    assert "ordering a certificate" not in server.output(since), server.output(since)


def test_tls_alpn_challenges_are_answered_by_the_direct_tls_listener(make_server, pebble,
                                                                      tmp_path):
    # No HTTP at all: pebble validates with acme-tls/1 handshakes on the direct-TLS port.
    server = make_server(
        server={"hosts": [DOMAIN]},
        c2s={"direct_tls_listen": [f"127.0.0.1:{pebble.tls_port}"]},
        acme={"enabled": True, "directory_url": pebble.directory_url,
              "ca_file": str(pebble.ca_file), "challenge": "tls-alpn-01"},
        users=())
    server.wait_for_log_blocking("ACME: certificate obtained and installed", timeout=ORDER_TIMEOUT)
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    cert = served_certificate(server.direct_tls_port, root)
    names = {value for kind, value in cert["subjectAltName"] if kind == "DNS"}
    assert {DOMAIN, f"conference.{DOMAIN}"} <= names, names
    # A client offering acme-tls/1 for a name with no challenge in progress gets nothing.
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(["acme-tls/1"])
    with pytest.raises(ssl.SSLError):
        with socket.create_connection(("127.0.0.1", server.direct_tls_port), timeout=30) as raw:
            context.wrap_socket(raw, server_hostname=DOMAIN)


def test_a_challenge_pebble_cannot_fetch_gets_no_certificate(make_server, pebble, tmp_path):
    # xmppd's HTTP listener is not where pebble looks for the challenge.
    server = acme_server(make_server, pebble, _free_port())
    server.wait_for_log_blocking("ACME: no certificate yet", timeout=ORDER_TIMEOUT)
    assert "certificate obtained" not in server.output()
    # Still serving, with its self-signed certificate, which pebble's root does not sign.
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    context = ssl.create_default_context(cafile=str(root))
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", server.direct_tls_port), timeout=30) as raw:
            context.wrap_socket(raw, server_hostname=DOMAIN)
