"""Clients that distributions still ship, logging in over TLS 1.3 on their first connection.

slixmpp 1.8.3 (Debian 12's python3-slixmpp, which poezio there runs on) binds only with
``tls-unique``, which TLS 1.3 does not define (RFC 9266 §3). It tries each advertised -PLUS
mechanism, is refused for the binding type, then falls back to plain SCRAM with the ``y`` flag
(RFC 5802 §6). The server must name the reason, not count these refusals toward
``max_auth_failures``, accept ``y`` after them on that stream, and log each failure with its
mechanism and reason. A ``y`` on a stream without such a refusal stays a downgrade (see
``test_y_flag_without_a_refused_plus_attempt_is_a_downgrade``).

The clients run in their own interpreters: a virtualenv with slixmpp 1.8.3 that
``cargo xtask ci`` builds (``.venv-slixmpp-1.8``), and Debian's ``/usr/bin/python3`` when its
``python3-slixmpp`` is installed (a dependency of the ``poezio`` package that xtask installs).
poezio itself logs in too, in a tmux terminal, as the unprivileged user ``nobody`` (it refuses
to run as root).
"""

import base64
import json
import os
import pathlib
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import PASSWORD
from raw import SASL_NS, RawClient, q
from test_sasl import tls_stream

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = pathlib.Path(__file__).resolve().parent / "old_clients" / "slixmpp_login.py"
OLD_VENV_PYTHON = pathlib.Path(
    os.environ.get("XMPPD_OLD_SLIXMPP_PYTHON", ROOT / ".venv-slixmpp-1.8" / "bin" / "python"))
DEBIAN_PYTHON = pathlib.Path("/usr/bin/python3")


def slixmpp_version(python: pathlib.Path) -> str | None:
    if not python.exists():
        return None
    probe = subprocess.run([str(python), "-c", "import slixmpp; print(slixmpp.__version__)"],
                           capture_output=True, text=True, timeout=60, check=False)
    return probe.stdout.strip() if probe.returncode == 0 else None


def interpreters():
    yield pytest.param(OLD_VENV_PYTHON, "1.8.3", id="slixmpp-1.8.3")
    yield pytest.param(DEBIAN_PYTHON, None, id="debian-python3-slixmpp")


def run_login(python: pathlib.Path, server, user: str = "alice") -> dict:
    done = subprocess.run(
        [str(python), str(SCRIPT), server.jid(user), PASSWORD, "127.0.0.1",
         str(server.starttls_port)],
        capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, f"no result from the client:\n{done.stdout}\n{done.stderr}"
    return json.loads(lines[-1])


@pytest.mark.parametrize("python, expected_version", list(interpreters()))
@pytest.mark.parametrize("hide_ip", [False, True], ids=["ip-logged", "ip-hidden"])
def test_old_slixmpp_logs_in_on_its_first_connection(make_server, python, expected_version,
                                                     hide_ip):
    version = slixmpp_version(python)
    if version is None:
        if python == OLD_VENV_PYTHON:
            pytest.fail(f"{python} with slixmpp is missing; `cargo xtask ci` creates it")
        pytest.skip(f"{python} has no slixmpp (Debian's python3-slixmpp is not installed)")
    if expected_version is not None:
        assert version == expected_version
    server = make_server(server={"hide_ip_in_logs": hide_ip})
    start = server.line_count()
    result = run_login(python, server)
    assert result["ok"], result
    assert result["connections"] == 1, f"needed a reconnection: {result}"
    assert result["jid"].startswith("alice@localhost/"), result
    output = server.output(start)
    failures = [line for line in output.splitlines() if "authentication failed" in line]
    if "tls-unique" in "".join(failures):
        # This client binds with tls-unique: each refusal is logged with its mechanism.
        assert any("SCRAM-SHA-512-PLUS" in line for line in failures), failures
    if hide_ip:
        assert "127.0.0.1" not in output, [l for l in output.splitlines() if "127.0.0.1" in l]
    elif failures:
        assert all("127.0.0.1" in line for line in failures), failures


NOBODY = "65534"


def poezio_runnable() -> str | None:
    """Why poezio cannot run here, or None."""
    for tool in ("poezio", "tmux", "setpriv"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def test_poezio_logs_in_on_its_first_connection(server):
    missing = poezio_runnable()
    if missing:
        pytest.skip(missing)
    # poezio reads its configuration and the CA as nobody: keep them outside pytest's private
    # temporary directory, in a directory nobody can read but not write (poezio rewrites a
    # configuration file it can write).
    config_dir = pathlib.Path(tempfile.mkdtemp(prefix="xmppd-poezio-cfg-"))
    home = pathlib.Path(tempfile.mkdtemp(prefix="xmppd-poezio-home-"))
    session = f"xmppd-poezio-{os.getpid()}"
    try:
        config_dir.chmod(0o755)
        home.chmod(0o777)
        ca = config_dir / "ca.crt"
        shutil.copy(server.data_dir / "tls" / "self-signed.crt", ca)
        ca.chmod(0o644)
        config = config_dir / "poezio.cfg"
        config.write_text(
            "[Poezio]\n"
            f"jid = {server.jid('alice')}\n"
            f"password = {PASSWORD}\n"
            "custom_host = 127.0.0.1\n"
            f"custom_port = {server.starttls_port}\n"
            f"ca_cert_path = {ca}\n")
        config.chmod(0o644)
        start = server.line_count()
        env = " ".join(f"{name}={home}" for name in
                       ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"))
        command = (f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
                   f"env {env} poezio -f {config}")
        subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "160", "-y", "40",
                        command], check=True, timeout=30)
        deadline = time.monotonic() + 90
        while "session bound jid=alice@localhost/" not in server.output(start):
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session],
                                    capture_output=True, text=True, check=False).stdout
            assert time.monotonic() < deadline, f"poezio did not log in:\n{screen}"
            time.sleep(0.2)
        output = server.output(start)
        # One login, not a client reconnecting in a loop.
        assert output.count("session bound jid=alice@localhost/") == 1, output
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True,
                       check=False, timeout=30)
        shutil.rmtree(config_dir, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


def scram_first(flag: str) -> str:
    return base64.b64encode(f"{flag},,n=alice,r=0123456789abcdef".encode()).decode()


def auth(client: RawClient, mech: str, payload: str):
    client.send(f"<auth xmlns='{SASL_NS}' mechanism='{mech}'>{payload}</auth>")
    return client.next_element()


def test_y_flag_without_a_refused_plus_attempt_is_a_downgrade(server):
    # Someone stripped the -PLUS mechanisms from what the client saw, so it says `y` at once.
    client = tls_stream(server)
    failure = auth(client, "SCRAM-SHA-256", scram_first("y"))
    assert failure.tag == q(SASL_NS, "failure")
    assert failure.find(q(SASL_NS, "not-authorized")) is not None
    assert "downgrade" in failure.findtext(q(SASL_NS, "text"))


def test_y_flag_after_a_refused_binding_type_is_accepted(server):
    client = tls_stream(server)
    refused = auth(client, "SCRAM-SHA-256-PLUS", scram_first("p=tls-unique"))
    assert refused.tag == q(SASL_NS, "failure")
    assert "tls-unique" in refused.findtext(q(SASL_NS, "text"))
    challenge = auth(client, "SCRAM-SHA-256", scram_first("y"))
    assert challenge.tag == q(SASL_NS, "challenge"), challenge.tag
