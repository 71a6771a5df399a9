"""Schemathesis against the ingest service, on the embedded broker with a tmp lake."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from contract_fuzz.fuzz_kit import fuzz_operations, stop_lifespans, wait_healthy
from testkit import INTERNAL_HEADERS

from emergify_cli.broker import EmbeddedBroker
from emergify_ingest.config import Settings
from emergify_ingest.main import create_app


@pytest.fixture(scope="module")
def ingest_schema(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    tag = uuid.uuid4().hex[:8]
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=broker.bootstrap,
        lake_uri=str(Path(tmp_path_factory.mktemp("fuzz-ingest")) / "lake"),
        songs_topic=f"fuzz.songs.{tag}",
        songs_dlq_topic=f"fuzz.dlq.{tag}",
        catalog_changes_topic=f"fuzz.changes.{tag}",
        models_topic=f"fuzz.models.{tag}",
        kafka_request_timeout_ms=5_000,
        kafka_connect_backoff_s=0.2,
    )
    app = create_app(settings)
    wait_healthy(app)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=INTERNAL_HEADERS)
    stop_lifespans()


def test_ingest_api(ingest_schema) -> None:
    fuzzed = fuzz_operations(ingest_schema)
    assert "POST /api/v1/songs/upload" in fuzzed
