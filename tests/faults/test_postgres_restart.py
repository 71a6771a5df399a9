"""The issue's fault: PostgreSQL restarted mid-stream. Nothing is lost or duplicated, the stream
processor and the recommender recover by themselves (same processes), and while the database
is down the recommender keeps answering from memory (or says 503 with ``Retry-After``),
never hangs and never answers a generic 500."""

from __future__ import annotations

import os
import threading
import time
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

from .conftest import PostgresCluster

N_BEFORE = 3_000  # songs in the table before the outage
N_DURING = 6_000  # songs produced around the outage (before, while down, after)
OUTAGE_SECONDS = 5.0
# A hang shows up as a timeout; a healthy answer from memory takes milliseconds.
REQUEST_TIMEOUT = 15.0


@pytest.fixture
def services(
    broker: EmbeddedBroker, private_pg: PostgresCluster, tmp_path: Path
) -> Iterator[dict[str, object]]:
    """The real stream processor and recommender, as processes, on the private cluster."""
    suffix = tmp_path.name[-10:]
    stream_url = f"http://127.0.0.1:{free_port()}"
    recommender_url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "EMERGIFY_DATABASE_URL": private_pg.url,
        "EMERGIFY_CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
        "EMERGIFY_MODELS_DIR": str(tmp_path / "models"),
        "EMERGIFY_LAKE_URI": str(tmp_path / "lake"),
        "EMERGIFY_STREAM_PROCESSOR_URL": stream_url,
        "EMERGIFY_RECOMMENDER_URL": recommender_url,
        "EMERGIFY_SONGS_TOPIC": f"songs.{suffix}",
        "EMERGIFY_SONGS_DLQ_TOPIC": f"dlq.{suffix}",
        "EMERGIFY_CATALOG_CHANGES_TOPIC": f"catalog.{suffix}",
        "EMERGIFY_MODELS_TOPIC": f"models.{suffix}",
        "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
        "EMERGIFY_MAX_OFFSETS_PER_TRIGGER": "1000",
        "EMERGIFY_AUTO_RETRAIN": "false",
        "EMERGIFY_REFRESH_INTERVAL_SECONDS": "1",
        "EMERGIFY_LOG_LEVEL": "INFO",
    }
    create_topics(broker.bootstrap, [env["EMERGIFY_SONGS_TOPIC"]], 3)
    processor = ServiceProcess("emergify_stream", env, tmp_path / "stream.log")
    recommender = ServiceProcess("emergify_recommender", env, tmp_path / "recommender.log")
    try:
        processor.start()
        processor.wait_healthy(stream_url, timeout=240)  # the tables exist from here on
        recommender.start()
        recommender.wait_healthy(recommender_url, timeout=60)
        yield {
            "processor": processor,
            "recommender": recommender,
            "stream_url": stream_url,
            "recommender_url": recommender_url,
            "topic": env["EMERGIFY_SONGS_TOPIC"],
        }
    finally:
        recommender.terminate()
        processor.terminate()


def check_answer(response: httpx.Response) -> None:
    """200, or a 503 problem that says when to come back; anything else fails the test."""
    if response.status_code == 503:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert int(response.headers["retry-after"]) > 0
        return
    assert response.status_code == 200, (response.request.url, response.text[:500])


@pytest.mark.slow
@pytest.mark.spark
def test_postgres_restart_mid_stream_loses_nothing_and_services_recover(
    services: dict[str, object], broker: EmbeddedBroker, private_pg: PostgresCluster
) -> None:
    processor: ServiceProcess = services["processor"]  # type: ignore[assignment]
    recommender: ServiceProcess = services["recommender"]  # type: ignore[assignment]
    stream_url, rec_url = services["stream_url"], services["recommender_url"]
    topic: str = services["topic"]  # type: ignore[assignment]
    pids = (processor.pid, recommender.pid)
    engine = make_engine(private_pg.url)

    def count() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()

    events = [song_event(i, label="Fault") for i in range(N_BEFORE + N_DURING)]
    expected = {k.decode() for k, _ in events}
    assert len(expected) == len(events)

    # 1. A catalog the recommender serves from memory.
    produce(broker.bootstrap, topic, events[:N_BEFORE])
    wait_for(lambda: count() == N_BEFORE, timeout=120, what="the first songs in the table")
    api = httpx.Client(base_url=rec_url, timeout=REQUEST_TIMEOUT, headers=INTERNAL_HEADERS)
    wait_for(
        lambda: api.get("/api/v1/catalog").json().get("songs") == N_BEFORE,
        timeout=60,
        what="the first songs in the recommender",
    )
    seed = events[0][0].decode()

    # 2. Songs keep coming while the database goes away and comes back.
    def send() -> None:
        for lo in range(N_BEFORE, len(events), 500):
            produce(broker.bootstrap, topic, events[lo : lo + 500])
            time.sleep(0.4)

    sender = threading.Thread(target=send)
    sender.start()
    wait_for(lambda: count() > N_BEFORE, timeout=60, what="a micro-batch after the first")
    private_pg.stop("fast")
    down_at = time.monotonic()
    answers = 0
    while time.monotonic() - down_at < OUTAGE_SECONDS:
        for response in (
            api.post("/api/v1/recommendations", json={"seeds": [seed], "limit": 10}),
            api.get("/api/v1/songs", params={"q": "Fault song 1"}),
            api.get(f"/api/v1/songs/{seed}"),
            api.get("/api/v1/catalog"),
            api.get("/health"),
        ):
            check_answer(response)
            answers += 1
        time.sleep(0.2)
    # From memory: the loaded catalog still answers, the seed's detail included.
    during = api.post("/api/v1/recommendations", json={"seeds": [seed], "limit": 10})
    assert during.status_code == 200 and len(during.json()["items"]) == 10
    assert api.get(f"/api/v1/songs/{seed}").json()["name"] == "Fault song 0"
    # The stream processor noticed and is waiting, not dead.
    wait_for(
        lambda: (
            httpx.get(
                f"{stream_url}/health", timeout=REQUEST_TIMEOUT, headers=INTERNAL_HEADERS
            ).status_code
            == 503
        ),
        timeout=30,
        what="the stream processor to report the database outage",
    )
    private_pg.start()
    sender.join(120)
    assert not sender.is_alive()

    # 3. Both recover by themselves: every song exactly once, served by the same processes.
    wait_for(lambda: count() == len(events), timeout=180, what="every song in the table")
    processor.wait_healthy(stream_url, timeout=60)
    status = wait_for(
        lambda: (
            (
                s := httpx.get(
                    f"{stream_url}/admin/status", timeout=30, headers=INTERNAL_HEADERS
                ).json()
            )["lag"]
            and s["lag"]["total"] == 0
            and s
        ),
        timeout=60,
        what="lag 0",
    )
    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
        batch_rows = conn.execute(sa.select(sa.func.sum(stream_batches.c.rows))).scalar_one()
    assert len(ids) == len(set(ids)) == len(events)
    assert set(ids) == expected
    assert batch_rows == len(events)  # every song written by exactly one committed batch
    assert status["songs"] == len(events)

    wait_for(
        lambda: api.get("/api/v1/catalog").json().get("songs") == len(events),
        timeout=60,
        what="every song in the recommender",
    )
    newest = events[-1][0].decode()
    assert api.get(f"/api/v1/songs/{newest}").status_code == 200
    after = api.post("/api/v1/recommendations", json={"seeds": [newest], "limit": 5})
    assert after.status_code == 200 and len(after.json()["items"]) == 5
    assert api.get("/health").json()["status"] == "ok"

    assert (processor.pid, recommender.pid) == pids
    assert processor.alive() and recommender.alive()
    assert "database unreachable; the micro-batch waits and retries" in (
        processor.log_path.read_text()
    )
    assert answers > 0
    api.close()
    engine.dispose()
