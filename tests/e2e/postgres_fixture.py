"""A real PostgreSQL server for the tests of ``[storage] backend = "postgres"``.

Each ``Postgres`` is a cluster made with Debian's ``initdb`` in a temporary directory, listening
on a free loopback port (and on a Unix socket in that directory), with a superuser ``xmppd``
whose password TCP connections must give. PostgreSQL refuses to run as root, so as root its
programs run as the ``postgres`` user (``runuser``). ``cargo xtask ci`` installs ``postgresql``
when it is missing; without it the tests are skipped, except under ``cargo xtask ci``
(``XMPPD_E2E_CI``) or a CI service (``CI``), where that is a failure.
"""

from __future__ import annotations

import os
import pathlib
import pwd
import shutil
import subprocess
import tempfile

import pytest

from dbserver import free_port, unavailable

USER = "xmppd"
PASSWORD = "pg e2e secret"
DATABASE = "xmppd"


def _bin_dir() -> pathlib.Path | None:
    versions = []
    for d in pathlib.Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        try:
            versions.append((int(d.parent.parent.name), d.parent))
        except ValueError:
            continue
    return max(versions)[1] if versions else None


def _unavailable(why: str):
    unavailable("PostgreSQL", "postgresql", why)


class Postgres:
    def __init__(self) -> None:
        bin_dir = _bin_dir()
        if bin_dir is None:
            _unavailable("PostgreSQL is not installed")
        self.bin = bin_dir
        self.as_root = os.geteuid() == 0
        if self.as_root:
            try:
                self.owner = pwd.getpwnam("postgres")
            except KeyError:
                _unavailable("no postgres user")
        # Not under pytest's tmp_path: the postgres user must be able to reach it.
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="xmppd-e2e-pg-"))
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD)
        if self.as_root:
            for path in (self.dir, pwfile):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self.port = 0
        self._run("initdb", "-D", str(self.dir / "data"), "-U", USER,
                  "--auth-host=scram-sha-256", "--auth-local=trust", "--encoding=UTF8",
                  "--locale=C.UTF-8", f"--pwfile={pwfile}")
        self.start()
        self.psql(f"CREATE DATABASE {DATABASE}", database="postgres")

    def _command(self, program: str, *args: str) -> list[str]:
        path = str(self.bin / program)
        return (["runuser", "-u", "postgres", "--", path] if self.as_root else [path]) + list(args)

    def _run(self, program: str, *args: str) -> str:
        result = subprocess.run(self._command(program, *args), stdin=subprocess.DEVNULL,
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise AssertionError(f"{program} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        """Starts the server (on the same port when it ran before), waiting until it is up."""
        attempts = 1 if self.port else 5
        for _ in range(attempts):
            port = self.port or free_port()
            options = f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
            result = subprocess.run(
                self._command("pg_ctl", "-D", str(self.dir / "data"), "-l",
                              str(self.dir / "log"), "-w", "-t", "120", "-o", options, "start"),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                timeout=180)
            if result.returncode == 0:
                self.port = port
                return
        log = (self.dir / "log").read_text(errors="replace")
        raise AssertionError(f"PostgreSQL did not start:\n{log}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-w", "-m", "fast", "stop")

    def psql(self, sql: str, database: str = DATABASE) -> str:
        """Runs ``sql`` over the Unix socket (trusted) and returns the rows, one per line."""
        return self._run("psql", "-h", str(self.dir), "-p", str(self.port), "-U", USER,
                         "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql)

    @property
    def url(self) -> str:
        """The database's URL, without the password."""
        return f"postgres://{USER}@127.0.0.1:{self.port}/{DATABASE}"

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop")
        except AssertionError:
            pass  # already stopped
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def postgres():
    """A running PostgreSQL with an empty database ``xmppd``."""
    server = Postgres()
    yield server
    server.close()
