"""The broker's availability: start-up without it, losing it, and getting it back."""

from __future__ import annotations

from pathlib import Path

from catalog_fixtures import json_song
from fastapi.testclient import TestClient
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker, free_port
from emergify_ingest.master_dataset import read_master_dataset

PROBLEM = "application/problem+json"
SONG = json_song()


def test_health_is_ok_when_ready(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["service"] == "ingest"
    assert body["kafka"] == "connected"
    assert body["lake"] == "writable"


def test_broker_down_is_503_with_retry_after(
    fresh_broker: EmbeddedBroker, make_client, sample_csv: Path
) -> None:
    client = make_client(fresh_broker, kafka_request_timeout_ms=2_000)
    fresh_broker.stop()

    response = client.post(
        "/api/v1/songs/upload", files={"file": ("s.csv", sample_csv.read_bytes(), "text/csv")}
    )

    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.headers["retry-after"] == "7"
    body = response.json()
    assert body["saved"] == 4470
    assert body["published"] == 0
    assert "safe in the master dataset" in body["detail"]
    lake = read_master_dataset(client.app.state.settings.lake_uri)
    assert lake.num_rows == 4470
    assert set(lake.column("upload_id").to_pylist()) == {body["upload_id"]}

    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"

    json_response = client.post("/api/v1/songs", json=SONG)
    assert json_response.status_code == 503
    assert json_response.headers["retry-after"] == "7"


def test_send_after_a_broker_restart_works(
    fresh_broker: EmbeddedBroker, make_client, consume
) -> None:
    client = make_client(fresh_broker, kafka_request_timeout_ms=2_000)
    assert client.post("/api/v1/songs", json=SONG).status_code == 202
    fresh_broker.stop()
    # The embedded broker keeps topics in memory: the restarted one has none.
    fresh_broker.start()

    statuses = []

    def accepted() -> bool:
        response = client.post("/api/v1/songs", json=SONG)
        statuses.append(response.status_code)
        assert response.status_code in (202, 503), response.text  # 503 until it reconnects
        return response.status_code == 202

    wait_for(accepted, 60, "a 202 after the broker restart")
    assert set(statuses[:-1]) <= {503} and statuses[-1] == 202, statuses

    topic = client.app.state.settings.songs_topic
    records = consume(fresh_broker.bootstrap, topic, 1)
    assert [r.key for r in records] == [b"5P6nbeGMqnAGwqt9rrraaQ"]
    assert client.get("/health").status_code == 200


def test_starts_before_the_broker_and_connects_later(make_client) -> None:
    later = EmbeddedBroker(free_port())
    client = make_client(later, ready=False)

    health = client.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "starting"
    early = client.post("/api/v1/songs", json=SONG)
    assert early.status_code == 503
    assert early.headers["retry-after"] == "7"

    later.start()
    try:
        wait_for(lambda: client.get("/health").status_code == 200, 60, "ingest to connect", 0.2)
        assert client.post("/api/v1/songs", json=SONG).status_code == 202
    finally:
        later.stop()


def test_unwritable_lake_makes_health_degraded(
    broker: EmbeddedBroker, make_client, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the lake should be")
    client = make_client(broker, ready=False, lake_uri=str(blocker / "lake"))

    body = wait_for(
        lambda: (b := client.get("/health").json())["kafka"] == "connected" and b,
        60,
        "ingest to connect to the broker",
        0.1,
    )
    assert client.get("/health").status_code == 503
    assert body["status"] == "degraded"
    assert "lake" in body and body["lake"] != "writable"

    response = client.post("/api/v1/songs", json=SONG)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "master dataset" in response.json()["detail"]
