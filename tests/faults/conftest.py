"""Fixtures for the fault tests: a PostgreSQL cluster of the test's own, to stop and start;
ingest and the stream processor on a broker of the test's own (``stack``), to restart it.

The machine's shared PostgreSQL is never restarted (other tests use it): the cluster here is
made with ``initdb`` in a temporary folder and run with ``pg_ctl`` on a free port, trust
auth, as the ``postgres`` OS user when the tests run as root (``initdb`` refuses root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from pipeline_parts import WritePath, write_path

from emergify_cli.broker import EmbeddedBroker, free_port

PG_BIN = Path(os.environ.get("EMERGIFY_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PostgresCluster:
    """A throwaway PostgreSQL cluster: ``initdb`` once, then ``start`` / ``stop`` at will."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.data = root / "data"
        self.log = root / "postgres.log"
        # initdb and the server refuse to run as root.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the cluster's ``postgres`` database."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, capture_output=True, timeout=120)

    def init(self) -> PostgresCluster:
        self._run(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync",
        )  # fmt: skip
        return self

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.log),
            "-w", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: roll back open transactions, close every connection)."""
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


@pytest.fixture
def private_pg() -> Iterator[PostgresCluster]:
    """A started PostgreSQL cluster of the test's own on a free port; removed afterwards."""
    # Not pytest's tmp_path: its folders are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="emergify-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    cluster = PostgresCluster(root, free_port()).init()
    cluster.start()
    try:
        yield cluster
    finally:
        if cluster.running():
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Iterator[WritePath]:
    """Ingest (served in a thread) and the stream processor (a process), sharing a lake, on
    a broker of the test's own; the broker watch checks every second."""
    with write_path(
        fresh_broker.bootstrap,
        pg_url,
        tmp_path,
        {"EMERGIFY_BROKER_WATCH_INTERVAL_SECONDS": "1", "EMERGIFY_AUTO_RETRAIN": "false"},
        {"kafka_request_timeout_ms": 2_000, "kafka_connect_backoff_s": 0.2},
    ) as parts:
        yield parts
