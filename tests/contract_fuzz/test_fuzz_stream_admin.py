"""Schemathesis against the stream processor's admin app (SQLite, Spark not started)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from contract_fuzz.fuzz_kit import fuzz_operations, stop_lifespans
from testkit import INTERNAL_HEADERS

from emergify_stream.config import Settings
from emergify_stream.main import create_app


@pytest.fixture
def stream_admin_schema(sqlite_url: str) -> Iterator:
    settings = Settings(database_url=sqlite_url, kafka_bootstrap_servers="127.0.0.1:1")
    # Without Spark the app answers as it does while starting: 503 problems, status from the DB.
    app = create_app(settings, start_stream=False)
    yield schemathesis.openapi.from_asgi("/openapi.json", app, headers=INTERNAL_HEADERS)
    stop_lifespans()


def test_stream_admin_api(stream_admin_schema) -> None:
    fuzzed = fuzz_operations(stream_admin_schema)
    assert {"GET /admin/status", "POST /admin/retrain"} <= set(fuzzed)
