"""Helpers the test folders share (importable as ``testkit``; pytest puts tests/ on the path)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg

from emergify_contracts.internal_auth import INTERNAL_TOKEN_HEADER

#: The internal credential of every service a test builds or starts (tests/conftest.py puts
#: it in the environment, which services read and subprocesses inherit).
INTERNAL_TOKEN = "test-internal-token-0123456789abcdef-0123"
#: What a test sends when it calls an internal service directly, as the gateway does.
INTERNAL_HEADERS = {INTERNAL_TOKEN_HEADER: INTERNAL_TOKEN}

PG_ADMIN_DSN = os.environ.get(
    "EMERGIFY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


def new_pg_database(prefix: str = "emergify_test") -> tuple[str, str]:
    """Create an empty PostgreSQL database; return (name, SQLAlchemy URL)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def wait_for(
    check: Callable[[], Any], timeout: float = 30.0, what: str = "condition", interval: float = 0.5
) -> Any:
    """Poll ``check`` every ``interval`` seconds until it returns something truthy; return that.

    Fails naming ``what`` (and the last value) once ``timeout`` seconds have passed.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class ServiceProcess:
    """``python -m <module>`` in its own process group (a Spark JVM included), logging to
    ``log_path``: started, SIGKILLed, frozen and stopped the way an orchestrator would."""

    def __init__(self, module: str, env: dict[str, str], log_path: Path) -> None:
        self.module = module
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.module} was never started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the whole process group (no-op once it is gone)."""
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the group and reap the process."""
        if self.proc is not None:
            self.signal(signal.SIGKILL)
            self.proc.wait(30)

    def terminate(self, timeout: float = 60.0) -> None:
        """SIGTERM the service (continuing it first if frozen), SIGKILL what lingers."""
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGCONT)
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):  # SIGKILLed below
                self.proc.wait(timeout)
        self.kill()

    def wait_healthy(self, base_url: str, timeout: float = 180.0) -> None:
        """Poll ``base_url``/health until it answers 200; fail early if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.alive(), f"{self.module} exited:\n{self.log_tail()}"
            with contextlib.suppress(httpx.HTTPError):
                health = httpx.get(f"{base_url}/health", timeout=2, headers=INTERNAL_HEADERS)
                if health.status_code == 200:
                    return
            time.sleep(0.3)
        raise AssertionError(f"{self.module} never became healthy:\n{self.log_tail()}")
