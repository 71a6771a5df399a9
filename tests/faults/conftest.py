"""Fixtures for the fault tests: a PostgreSQL cluster of the test's own, to stop and start.

The machine's shared PostgreSQL is never restarted (other tests use it): the cluster here is
made with ``initdb`` in a temporary folder and run with ``pg_ctl`` on a free port, trust
auth, as the ``postgres`` OS user when the tests run as root (``initdb`` refuses root).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from emergify_cli.broker import free_port
from emergify_contracts.events import SongEvent
from emergify_contracts.song import Song

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


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def track_id(i: int) -> str:
    """A valid, distinct Spotify-style id for each ``i``."""
    digits = []
    for _ in range(22):
        i, r = divmod(i, 62)
        digits.append(BASE62[r])
    return "".join(reversed(digits))


def song_event(i: int, salt: int = 0) -> tuple[bytes, bytes]:
    """(key, value) of a valid ``SongEvent`` for generated song ``i``."""
    song = Song(
        track_id=track_id(i * 7919 + 12345 + salt),
        name=f"Fault song {i}",
        artists=[f"Fault artist {i % 300}"],
        danceability=(i % 100) / 100,
        energy=((i * 7) % 100) / 100,
        loudness=-30 + (i % 30),
        speechiness=((i * 3) % 100) / 100,
        acousticness=((i * 11) % 100) / 100,
        instrumentalness=((i * 13) % 100) / 100,
        liveness=((i * 17) % 100) / 100,
        valence=((i * 19) % 100) / 100,
        tempo=60 + i % 120,
    )
    event = SongEvent(
        upload_id=f"fault{i // 1000}",
        source="json",
        ingested_at=datetime(2025, 1, 1, tzinfo=UTC),
        song=song,
    )
    return song.track_id.encode(), event.model_dump_json().encode()


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    """Send ``records`` to ``topic`` with acks=all and wait for every ack."""
    asyncio.run(_produce(bootstrap, topic, records))
