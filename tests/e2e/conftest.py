"""Fixtures for the xmppd end-to-end tests.

Each test gets its own xmppd process with a fresh data directory and listeners on ports
chosen by the kernel (port 0), so tests never collide and can run in any order. Nothing is
built here: ``cargo xtask ci`` builds first and points ``XMPPD_BIN`` at the binary (default
``target/debug/xmppd``).

The ``server`` fixture starts a server with users alice, bob and carol (password
``PASSWORD``); ``make_server(**overrides)`` starts one with a customised configuration.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import re
import signal
import subprocess
import threading
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
DEFAULT_USERS = ("alice", "bob", "carol")
LISTENING = re.compile(
    r"xmppd listening: (starttls|direct-tls|http|https|proxy65|admin-http) (\S+):(\d+)")
START_TIMEOUT = 30.0
CLI_TIMEOUT = 60.0


def must_run_here() -> bool:
    """Whether a test that needs an external program must fail rather than skip without it:
    under ``cargo xtask ci`` (``XMPPD_E2E_CI``), which installs them, or a CI service."""
    return bool(os.environ.get("XMPPD_E2E_CI") or os.environ.get("CI"))


def xmppd_bin() -> pathlib.Path:
    path = pathlib.Path(os.environ.get("XMPPD_BIN", "target/debug/xmppd"))
    if not path.is_absolute():
        path = ROOT / path
    return path


def to_toml(config: dict) -> str:
    """Serialises the small subset of TOML the configuration uses: scalar keys, string lists,
    tables and arrays of tables (Python's standard library only reads TOML)."""

    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return str(v)
        if isinstance(v, str):
            escaped = v.replace("\\", "\\\\").replace('"', '\\"')
            return f'"{escaped}"'
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    lines: list[str] = []
    for section, body in config.items():
        if isinstance(body, list):
            # A top-level array of tables (`[[contact]]`).
            for item in body:
                lines.append(f"[[{section}]]")
                lines.extend(f"{k} = {value(v)}" for k, v in item.items())
                lines.append("")
            continue
        tables = {k: v for k, v in body.items() if isinstance(v, list) and v and
                  all(isinstance(x, dict) for x in v)}
        lines.append(f"[{section}]")
        for key, v in body.items():
            if key not in tables:
                lines.append(f"{key} = {value(v)}")
        for key, items in tables.items():
            for item in items:
                lines.append(f"[[{section}.{key}]]")
                lines.extend(f"{k} = {value(v)}" for k, v in item.items())
        lines.append("")
    return "\n".join(lines)


def merge(base: dict, overrides: dict) -> dict:
    """Deep-merges ``overrides`` into a copy of ``base``; a value of None removes the key."""
    out = dict(base)
    for key, v in overrides.items():
        if v is None:
            out.pop(key, None)
        elif isinstance(v, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], v)
        else:
            out[key] = v
    return out


class Server:
    """One xmppd process under test, plus its CLI."""

    def __init__(self, tmp: pathlib.Path, overrides: dict) -> None:
        self.tmp = tmp
        self.data_dir = tmp / "data"
        self.config_path = tmp / "xmppd.toml"
        self.config = merge(
            {
                "server": {
                    "hosts": ["localhost"],
                    "data_dir": str(self.data_dir),
                    "node_name": "e2e",
                    "log_level": "info",
                },
                "storage": {"sqlite_path": str(self.data_dir / "xmppd.sqlite")},
                "c2s": {
                    "starttls_listen": ["127.0.0.1:0"],
                    "direct_tls_listen": ["127.0.0.1:0"],
                },
            },
            overrides,
        )
        self.config_path.write_text(to_toml(self.config))
        self.domain = self.config["server"]["hosts"][0]
        self.proc: subprocess.Popen | None = None
        self.starttls_port = 0
        self.direct_tls_port = 0
        self.http_port = 0
        self.https_port = 0
        self.proxy65_port = 0
        self.admin_http_port = 0
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._reader: threading.Thread | None = None

    # --- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        binary = xmppd_bin()
        if not binary.exists():
            pytest.fail(f"xmppd binary not found at {binary}; build it or set XMPPD_BIN")
        with self._lock:
            self._lines.append("---- xmppd start ----\n")
            first_line = len(self._lines)
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(self.config_path), "serve"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        proc = self.proc
        self._reader = threading.Thread(target=self._pump, args=(proc,), daemon=True)
        self._reader.start()
        expected = {"starttls": len(self.config["c2s"].get("starttls_listen", [])),
                    "direct-tls": len(self.config["c2s"].get("direct_tls_listen", []))}
        http = self.config.get("http", {})
        if http.get("enabled"):
            expected["http"] = len(http.get("listen", ["127.0.0.1:5280"]))
            expected["https"] = len(http.get("tls_listen", []))
        if self.config.get("proxy65", {}).get("enabled"):
            expected["proxy65"] = 1
        if self.config.get("admin_http", {}).get("enabled"):
            expected["admin-http"] = 1
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            with self._lock:
                found = [LISTENING.search(line) for line in self._lines[first_line:]]
            found = [m for m in found if m]
            kinds = {k: [m for m in found if m.group(1) == k] for k in expected}
            if all(len(kinds[k]) >= n for k, n in expected.items()):
                break
            if proc.poll() is not None:
                pytest.fail(f"xmppd exited with {proc.returncode} during start:\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"xmppd did not report its listeners in time:\n{self.output()}")
            time.sleep(0.05)
        if kinds["starttls"]:
            self.starttls_port = int(kinds["starttls"][0].group(3))
        if kinds["direct-tls"]:
            self.direct_tls_port = int(kinds["direct-tls"][0].group(3))
        if kinds.get("http"):
            self.http_port = int(kinds["http"][0].group(3))
        if kinds.get("https"):
            self.https_port = int(kinds["https"][0].group(3))
        if kinds.get("proxy65"):
            self.proxy65_port = int(kinds["proxy65"][0].group(3))
        if kinds.get("admin-http"):
            self.admin_http_port = int(kinds["admin-http"][0].group(3))
        with self._lock:
            self.started_at_line = len(self._lines)

    def _pump(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            with self._lock:
                self._lines.append(raw.decode("utf-8", "replace"))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None
        return proc.returncode

    def kill9(self) -> None:
        """Kills the server without giving it any chance to flush or clean up."""
        proc = self.proc
        if proc is None:
            return
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # --- output --------------------------------------------------------------------------

    def output(self, since_line: int = 0) -> str:
        with self._lock:
            return "".join(self._lines[since_line:])

    def line_count(self) -> int:
        with self._lock:
            return len(self._lines)

    def log_lines(self, *words: str, since_line: int = 0) -> list[str]:
        """The lines logged so far (from ``since_line``) that contain every one of ``words``.
        For a line that must be there already; for one the server writes around the time of
        an answer, use :meth:`wait_for_log`."""
        return [line for line in self.output(since_line).splitlines()
                if all(word in line for word in words)]

    async def wait_for_log(self, *words: str, since_line: int = 0,
                           timeout: float = 30.0) -> list[str]:
        """Waits until a logged line contains every one of ``words`` and returns those lines.
        The log is read by a thread, so a line written before an answer a client received may
        show up a little after it."""
        deadline = time.monotonic() + timeout
        while not (found := self.log_lines(*words, since_line=since_line)):
            assert time.monotonic() < deadline, \
                f"the server never logged {words}:\n{self.output(since_line)}"
            await asyncio.sleep(0.05)
        return found

    def wait_for_log_blocking(self, *words: str, since_line: int = 0,
                              timeout: float = 30.0) -> list[str]:
        """:meth:`wait_for_log` for a test that runs no event loop."""
        deadline = time.monotonic() + timeout
        while not (found := self.log_lines(*words, since_line=since_line)):
            assert time.monotonic() < deadline, \
                f"the server never logged {words}:\n{self.output(since_line)}"
            time.sleep(0.05)
        return found

    # --- CLI -----------------------------------------------------------------------------

    def cli(self, *args: str, input: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Runs ``xmppd --config CONFIG ARGS…``; with ``check`` a non-zero exit fails the test
        with the command's output."""
        result = subprocess.run(
            [str(xmppd_bin()), "--config", str(self.config_path), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=CLI_TIMEOUT,
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"xmppd {' '.join(args)} exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def register(self, user: str, password: str = PASSWORD, domain: str | None = None) -> None:
        self.cli("register", user, domain or self.domain, password)

    def recreate_account(self, user: str, domain: str | None = None) -> None:
        """Removes ``user`` with ``xmppd unregister`` and registers the name again at once
        (``--ignore-tombstone``): a new account of the same name."""
        domain = domain or self.domain
        self.cli("unregister", user, domain)
        self.cli("register", "--ignore-tombstone", user, domain, PASSWORD)

    def jid(self, user: str, domain: str | None = None) -> str:
        return f"{user}@{domain or self.domain}"


@pytest.fixture
def make_server(tmp_path):
    """Factory: ``make_server(users=("alice",), **config_overrides)`` returns a started
    Server. Overrides are deep-merged into the default configuration by section, e.g.
    ``make_server(offline={"max_per_user": 2})``."""
    servers: list[Server] = []

    def factory(*, users=DEFAULT_USERS, start=True, **overrides) -> Server:
        directory = tmp_path / f"server{len(servers)}"
        directory.mkdir()
        server = Server(directory, overrides)
        servers.append(server)
        for user in users:
            server.register(user)
        if start:
            server.start()
        return server

    yield factory
    for server in servers:
        code = server.stop()
        # Shown by pytest only when the test failed: the server's side of the story.
        tail = server.output().splitlines()[-80:]
        print(f"==== xmppd output ({server.tmp}, exit {code}) ====")
        print("\n".join(tail))


@pytest.fixture
def server(make_server) -> Server:
    """A running server for domain ``localhost`` with users alice, bob and carol."""
    return make_server()
