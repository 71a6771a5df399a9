"""Fixtures for the ingest tests: the app on the real embedded broker with a tmp lake."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kafka_io
import pytest
from fastapi.testclient import TestClient
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker
from emergify_ingest.config import Settings
from emergify_ingest.main import create_app


def ingest_settings(bootstrap: str, lake: Path, **overrides: object) -> Settings:
    """Settings for one test: its own topics (so consumers see only its records), its own lake."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "kafka_bootstrap_servers": bootstrap,
        "lake_uri": str(lake),
        "songs_topic": f"test.songs.{tag}",
        "songs_dlq_topic": f"test.dlq.{tag}",
        "catalog_changes_topic": f"test.changes.{tag}",
        "models_topic": f"test.models.{tag}",
        "kafka_request_timeout_ms": 5_000,
        "kafka_connect_backoff_s": 0.2,
        "retry_after_s": 7,
        **overrides,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def make_client(tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Start ingest apps (lifespan included) on a given broker; all are stopped after the test."""
    opened: list[TestClient] = []

    def make(broker: EmbeddedBroker, ready: bool = True, **overrides: object) -> TestClient:
        settings = ingest_settings(broker.bootstrap, tmp_path / "lake", **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        if ready:
            wait_for(lambda: client.get("/health").status_code == 200, 60, "ingest ready", 0.1)
        return client

    yield make
    for client in reversed(opened):
        client.__exit__(None, None, None)


@pytest.fixture
def client(broker: EmbeddedBroker, make_client: Callable[..., TestClient]) -> TestClient:
    """An ingest app on the session broker, ready to take uploads."""
    return make_client(broker)


@pytest.fixture
def consume() -> Callable[..., list]:
    """``consume(bootstrap, topic, expected, deadline_s=60)``: see ``kafka_io.consume``."""
    return kafka_io.consume
