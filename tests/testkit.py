"""Helpers the test folders share (importable as ``testkit``; pytest puts tests/ on the path).

How to wait, and what not to sleep for: docs/testing.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg

from emergify_cli.waiting import wait_for

__all__ = ["ServiceProcess", "answers_200", "drop_pg_database", "new_pg_database", "wait_for"]

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


def answers_200(url: str) -> bool:
    """Whether ``url`` answers 200 now (False while nothing listens or it is not ready)."""
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=2).status_code == 200
    return False


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
        """Wait until ``base_url``/health answers 200; fail at once if the process exits."""

        def healthy() -> bool:
            assert self.alive(), f"{self.module} exited:\n{self.log_tail()}"
            return answers_200(f"{base_url}/health")

        wait_for(healthy, timeout, f"{self.module} to be healthy", interval=0.3)
