"""The embedded broker restarted (it forgets every topic): accepted songs still reach the
feature table, and the services reconnect by themselves.

Real parts only: the embedded broker, the ingest app served over HTTP, the stream processor
as its own process (Spark inside), PostgreSQL. The broker is stopped and started on the same
port; no service is restarted by hand.
"""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from catalog_fixtures import json_song, track_id
from pipeline_parts import WritePath
from testkit import INTERNAL_HEADERS, answers_200, wait_for

from emergify_cli.broker import EmbeddedBroker
from emergify_contracts.tables import make_engine, songs


def batch(first: int, n: int) -> list[dict]:
    return [
        json_song(track_id(i * 7919 + 99), name=f"Song {i}", danceability=(i % 100) / 100)
        for i in range(first, first + n)
    ]


def upload(ingest_url: str, songs_: list[dict], timeout: float = 60.0) -> list[int]:
    """POST until 202 (503 while the broker is away); return the statuses seen."""
    statuses: list[int] = []

    def accepted() -> bool:
        status = httpx.post(
            f"{ingest_url}/api/v1/songs", json=songs_, timeout=30, headers=INTERNAL_HEADERS
        ).status_code
        statuses.append(status)
        assert status in (202, 503), statuses  # 503 until the broker is back
        return status == 202

    wait_for(accepted, timeout, "the upload to get a 202", interval=0.5)
    return statuses


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.postgres
def test_songs_accepted_around_a_broker_restart_all_reach_the_feature_table(
    stack: WritePath, fresh_broker: EmbeddedBroker, pg_url: str
) -> None:
    ingest_url, processor_url, proc = stack.ingest_url, stack.processor_url, stack.processor
    engine = make_engine(pg_url)

    def stored() -> list[str]:
        try:
            with engine.connect() as conn:
                return [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
        except sa.exc.ProgrammingError:  # the processor has not created the tables yet
            return []

    proc.wait_healthy(processor_url)
    wait_for(
        lambda: httpx.get(f"{ingest_url}/health", headers=INTERNAL_HEADERS).status_code == 200,
        60,
        "ingest ready",
    )

    before, during, after = batch(0, 300), batch(300, 40), batch(340, 120)
    assert upload(ingest_url, before) == [202]
    wait_for(lambda: len(stored()) == 300, 120, "the first 300 songs in the feature table")

    fresh_broker.stop()
    # Accepted while the broker is away: 503, but safe in the master dataset.
    response = httpx.post(
        f"{ingest_url}/api/v1/songs", json=during, timeout=30, headers=INTERNAL_HEADERS
    )
    assert response.status_code == 503, response.text
    assert response.json()["saved"] == 40
    wait_for(
        lambda: (
            httpx.get(f"{ingest_url}/health", headers=INTERNAL_HEADERS).json()["kafka"]
            != "connected"
        ),
        30,
        "ingest to notice the broker is gone",
    )
    fresh_broker.start()  # the same port, no topics
    # The ingest reconnects and re-creates the topic; fewer records than before the restart,
    # so the new log ends below the stream's checkpoint.
    upload(ingest_url, after)

    expected = {s["track_id"] for s in before + during + after}
    ids = wait_for(
        lambda: (got := stored()) and set(got) == expected and got,
        150,
        "every accepted song in the feature table",
    )
    assert len(ids) == len(set(ids)) == 460
    assert proc.alive() and answers_200(f"{processor_url}/health")
    status = httpx.get(f"{processor_url}/admin/status", timeout=30, headers=INTERNAL_HEADERS).json()
    assert status["songs"] == 460
    engine.dispose()
