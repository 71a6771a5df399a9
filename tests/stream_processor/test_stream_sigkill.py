"""The issue's acceptance: kill -9 the stream processor mid-stream, restart it, and the
feature table holds every produced song exactly once."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from catalog_fixtures import song_event
from kafka_io import produce
from testkit import INTERNAL_HEADERS, ServiceProcess, wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_contracts.tables import make_engine, songs, stream_batches

N_SONGS = 20_000


@pytest.fixture
def processor(
    broker: EmbeddedBroker, pg_url: str, tmp_path: Path
) -> Iterator[tuple[ServiceProcess, str, str]]:
    port = free_port()
    suffix = tmp_path.name[-10:]
    env = {
        **os.environ,
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "EMERGIFY_DATABASE_URL": pg_url,
        "EMERGIFY_CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
        "EMERGIFY_MODELS_DIR": str(tmp_path / "models"),
        "EMERGIFY_STREAM_PROCESSOR_URL": f"http://127.0.0.1:{port}",
        "EMERGIFY_SONGS_TOPIC": f"songs.{suffix}",
        "EMERGIFY_SONGS_DLQ_TOPIC": f"dlq.{suffix}",
        "EMERGIFY_CATALOG_CHANGES_TOPIC": f"catalog.{suffix}",
        "EMERGIFY_MODELS_TOPIC": f"models.{suffix}",
        "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
        # Many small micro-batches, so the kill lands between two of them or inside one.
        "EMERGIFY_MAX_OFFSETS_PER_TRIGGER": "1500",
        "EMERGIFY_AUTO_RETRAIN": "false",
        "EMERGIFY_LOG_LEVEL": "INFO",
    }
    create_topics(broker.bootstrap, [env["EMERGIFY_SONGS_TOPIC"]], 3)
    proc = ServiceProcess("emergify_stream", env, tmp_path / "processor.log")
    yield proc, f"http://127.0.0.1:{port}", env["EMERGIFY_SONGS_TOPIC"]
    proc.terminate()


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.postgres
def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    processor: tuple[ServiceProcess, str, str], broker: EmbeddedBroker, pg_url: str
) -> None:
    proc, base_url, topic = processor
    engine = make_engine(pg_url)

    def count() -> int:
        try:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()
        except sa.exc.ProgrammingError:  # the processor has not created the tables yet
            return 0

    events = [song_event(i) for i in range(N_SONGS)]
    expected = {k.decode() for k, _ in events}
    assert len(expected) == N_SONGS

    proc.start()
    proc.wait_healthy(base_url)

    def send() -> None:
        for lo in range(0, N_SONGS, 2000):
            produce(broker.bootstrap, topic, events[lo : lo + 2000], linger_ms=20)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: count() > 0, 180, "a song in the feature table", interval=0.05)
    proc.kill()
    killed_at = count()
    sender.join(300)
    assert 0 < killed_at < N_SONGS

    proc.start()
    proc.wait_healthy(base_url)
    wait_for(lambda: count() >= N_SONGS, 300, f"{N_SONGS} songs after the restart", 0.5)

    def admin_status() -> dict:
        return httpx.get(f"{base_url}/admin/status", timeout=30, headers=INTERNAL_HEADERS).json()

    status = wait_for(
        lambda: (s := admin_status())["lag"] is not None and s["lag"]["total"] == 0 and s,
        120,
        "lag 0",
        0.5,
    )

    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
        batch_rows = conn.execute(sa.select(sa.func.sum(stream_batches.c.rows))).scalar_one()
    assert len(ids) == len(set(ids)) == N_SONGS
    assert set(ids) == expected
    assert batch_rows == N_SONGS  # every song written by exactly one committed batch
    assert status["songs"] == N_SONGS and status["lag"]["total"] == 0
    engine.dispose()
