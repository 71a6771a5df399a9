"""Schemathesis against the recommender, over a SQLite feature table.

Two catalogs: the sample CSV with a trained model (every route has songs, clusters and a
model to serve), and an empty one without a model (the 404 and empty-list paths). No broker:
the recommender's fallback poll keeps it fresh without the change feed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from contract_fuzz.fuzz_kit import (
    fuzz_operations,
    recommender_app,
    seed_trained_catalog,
    stop_lifespans,
    wait_healthy,
)
from testkit import INTERNAL_HEADERS

from emergify_contracts.tables import create_tables, make_engine

OPERATIONS = {
    "POST /api/v1/recommendations",
    "GET /api/v1/songs/{track_id}",
    "GET /api/v1/songs",
    "GET /api/v1/clusters",
    "GET /api/v1/model",
    "GET /api/v1/catalog",
}


@pytest.fixture(scope="module", params=["trained", "empty"])
def recommender_schema(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator:
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz-recommender') / 'emergify.db'}"
    if request.param == "trained":
        seed_trained_catalog(url)
    else:
        engine = make_engine(url)
        create_tables(engine)
        engine.dispose()
    app = recommender_app(url)
    wait_healthy(app)
    yield (
        request.param,
        schemathesis.openapi.from_asgi("/openapi.json", app, headers=INTERNAL_HEADERS),
    )
    stop_lifespans()


def test_recommender_api(recommender_schema) -> None:
    catalog, schema = recommender_schema
    fuzzed = fuzz_operations(schema)
    assert set(fuzzed) >= OPERATIONS
    if catalog == "trained":
        # The fuzz reached the handlers: every operation answered a 200 at least once.
        assert all(fuzzed[label][200] for label in OPERATIONS), fuzzed
