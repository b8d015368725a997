"""What the fixtures of real database servers (``postgres_fixture``, ``mariadb_fixture``) share:
skipping where the server is not installed (a failure under ``cargo xtask ci`` or a CI
service, which install it) and a free loopback port."""

from __future__ import annotations

import socket

import pytest

from conftest import must_run_here


def unavailable(engine: str, package: str, why: str):
    if must_run_here():
        pytest.fail(f"{engine} tests cannot run: {why}")
    pytest.skip(f"{engine} tests skipped: {why} (cargo xtask ci installs {package})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
