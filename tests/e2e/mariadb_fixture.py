"""A real MariaDB server for the tests of ``[storage] backend = "mysql"``.

Each ``MariaDb`` is a data directory made with Debian's ``mariadb-install-db`` in a temporary
directory and ``mariadbd`` listening on a free loopback port and on its own Unix socket there,
with a database user ``xmppd`` who logs in with a password over TCP (the grant tables are in
force, as in a deployment). As root the server runs as the ``mysql`` user. ``cargo xtask ci``
installs ``mariadb-server`` when it is missing; without it the tests are skipped, except under
``cargo xtask ci`` (``XMPPD_E2E_CI``) or a CI service (``CI``), where that is a failure.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile
import time

import pytest

from dbserver import free_port, unavailable

USER = "xmppd"
PASSWORD = "maria e2e secret"
DATABASE = "xmppd"
SERVER = pathlib.Path("/usr/sbin/mariadbd")


class MariaDb:
    def __init__(self) -> None:
        if not SERVER.exists():
            unavailable("MariaDB", "mariadb-server", "MariaDB is not installed")
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: the mysql user must be able to reach it.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="xmppd-e2e-mariadb-"))
        if self.as_root:
            owner = pwd.getpwnam("mysql")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._run("mariadb-install-db", "--no-defaults", f"--datadir={self.dir / 'data'}",
                  "--auth-root-authentication-method=socket", "--skip-test-db",
                  *(["--user=mysql"] if self.as_root else []))
        self.start()
        self.sql(f"CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';"
                 f"CREATE DATABASE {DATABASE};"
                 f"GRANT ALL PRIVILEGES ON {DATABASE}.* TO '{USER}'@'127.0.0.1';",
                 database=None)

    def _run(self, *command: str) -> str:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"{command[0]} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        """Starts the server (on the same port when it ran before), waiting until it answers."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            self.process = subprocess.Popen(
                [str(SERVER), "--no-defaults", f"--datadir={self.dir / 'data'}",
                 f"--socket={self.dir / 'sock'}", f"--pid-file={self.dir / 'pid'}",
                 f"--log-error={self.dir / 'log'}", f"--port={port}",
                 "--bind-address=127.0.0.1", "--skip-name-resolve",
                 "--innodb-buffer-pool-size=32M", "--innodb-log-file-size=16M",
                 *(["--user=mysql"] if self.as_root else [])],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # mariadbd has no "start and wait" mode: ask it until it answers, or it exits.
            deadline = time.monotonic() + 120
            while self.process.poll() is None and time.monotonic() < deadline:
                if self._answers():
                    self.port = port
                    return
                time.sleep(0.1)
            self.process.kill()
            self.process.wait()
        log = (self.dir / "log").read_text(errors="replace")
        raise AssertionError(f"MariaDB did not start:\n{log}")

    def _answers(self) -> bool:
        try:
            self.sql("SELECT 1", database=None)
            return True
        except AssertionError:
            return False

    def stop(self) -> None:
        """A clean shutdown, waiting until the server is down."""
        self.sql("SHUTDOWN", database=None)
        if self.process is not None:
            self.process.wait(timeout=120)
            self.process = None

    def sql(self, sql: str, database: str | None = DATABASE) -> str:
        """Runs ``sql`` as the administrator over the Unix socket; the rows, one per line."""
        return self._run("mariadb", "--no-defaults", f"--socket={self.dir / 'sock'}", "-u",
                         "root", "-N", "-B", *([database] if database else []), "-e", sql)

    @property
    def url(self) -> str:
        """The database's URL, without the password."""
        return f"mysql://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def mariadb():
    """A running MariaDB with an empty database ``xmppd``."""
    server = MariaDb()
    yield server
    server.close()
