"""Fixtures of the recommender tests: the sample catalog, a model fitted with NumPy (no
Spark), a database seeded with both, a running app, and a way to publish events.

Everything is real: SQLite and PostgreSQL databases, the embedded broker, the app with its
lifespan (TestClient as a context manager).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pytest
from catalog_fixtures import (
    feature_matrix,
    fit_portable_model,
    insert_model,
    read_sample_songs,
    song_row,
)
from fastapi.testclient import TestClient
from kafka_io import publish, publish_raw
from sqlalchemy.engine import Engine
from testkit import INTERNAL_HEADERS, drop_pg_database, new_pg_database

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.model import PortableModel
from emergify_contracts.song import Song
from emergify_contracts.tables import (
    create_tables,
    make_engine,
    songs,
    stream_batches,
)
from emergify_recommender.build import build_index
from emergify_recommender.config import Settings
from emergify_recommender.index import SongIndex
from emergify_recommender.main import create_app
from emergify_recommender.model import LoadedModel
from emergify_recommender.records import SongRecord

# --- the sample catalog and a model ------------------------------------------------------


@pytest.fixture(scope="session")
def sample_songs() -> list[Song]:
    return read_sample_songs()


@pytest.fixture(scope="session")
def sample_model(sample_songs: list[Song]) -> PortableModel:
    """Model v1 over the whole sample: k=8."""
    return fit_portable_model(feature_matrix(sample_songs), k=8, version=1)


@pytest.fixture(scope="session")
def sample_index(sample_songs: list[Song], sample_model: PortableModel) -> SongIndex:
    """The sample catalog indexed in memory under model v1 (no database)."""
    records = [SongRecord.from_row(song_row(s, 1)) for s in sample_songs]
    return build_index(records, LoadedModel.from_portable(sample_model), watermark=1)


# --- databases ---------------------------------------------------------------------------


@dataclass
class CatalogDb:
    """A real database with Emergify's tables, written the way the stream processor does."""

    url: str
    engine: Engine

    def insert_songs(self, rows: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            conn.execute(songs.insert(), rows)

    def update_song(self, track_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(songs.update().where(songs.c.track_id == track_id).values(**values))

    def mark_batch(self, table_version: int, rows: int, committed_at: datetime) -> None:
        """Record a committed micro-batch, as the speed layer's sink does."""
        with self.engine.begin() as conn:
            conn.execute(
                stream_batches.insert().values(
                    query_name="songs",
                    batch_id=table_version,
                    rows=rows,
                    table_version=table_version,
                    committed_at=committed_at,
                )
            )

    def insert_model(self, model: PortableModel, metrics: dict[str, Any] | None = None) -> None:
        insert_model(self.engine, model, metrics)


def new_rec_database() -> tuple[str, str]:
    """A new, empty PostgreSQL database named for these tests; (name, SQLAlchemy URL)."""
    return new_pg_database("emergify_rec")


def open_catalog_db(url: str) -> CatalogDb:
    engine = make_engine(url)
    create_tables(engine)
    return CatalogDb(url=url, engine=engine)


@pytest.fixture
def catalog_db(database_url: str) -> Iterator[CatalogDb]:
    """An empty database (SQLite, then PostgreSQL) with the tables created."""
    db = open_catalog_db(database_url)
    yield db
    db.engine.dispose()


# --- the app -----------------------------------------------------------------------------


def unique_topics() -> dict[str, str]:
    """Topic names of a test's own, so tests sharing the session broker do not interfere."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "songs_topic": f"t{suffix}.songs",
        "songs_dlq_topic": f"t{suffix}.songs.dlq",
        "catalog_changes_topic": f"t{suffix}.catalog-changes",
        "models_topic": f"t{suffix}.models",
        "listener_changes_topic": f"t{suffix}.listener-changes",
    }


def recommender_settings(database_url: str, bootstrap: str, **overrides: Any) -> Settings:
    """Settings for a test app; the stream processor's address answers nothing."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "kafka_bootstrap_servers": bootstrap,
        "stream_processor_url": "http://127.0.0.1:9",
        "refresh_interval_seconds": 3600.0,
        "change_feed_retry_initial_seconds": 0.2,
        "change_feed_retry_max_seconds": 1.0,
        **unique_topics(),
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def ensure_topics(settings: Settings) -> None:
    create_topics(settings.kafka_bootstrap_servers, settings.topics(), partitions=3)


@pytest.fixture
def app_client() -> Iterator[Callable[[Settings], TestClient]]:
    """Start apps with their lifespan; every one is stopped after the test."""
    started: list[TestClient] = []

    def start(settings: Settings) -> TestClient:
        client = TestClient(create_app(settings), headers=INTERNAL_HEADERS)
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


@dataclass(frozen=True)
class Helpers:
    """The plain functions above, for test modules (importlib mode cannot import conftest)."""

    song_row: Callable[..., dict[str, Any]] = song_row
    fit_portable_model: Callable[..., PortableModel] = fit_portable_model
    feature_matrix: Callable[[list[Song]], np.ndarray] = feature_matrix
    recommender_settings: Callable[..., Settings] = recommender_settings
    ensure_topics: Callable[[Settings], None] = ensure_topics
    publish: Callable[..., None] = publish
    publish_raw: Callable[..., None] = publish_raw
    open_catalog_db: Callable[[str], CatalogDb] = open_catalog_db
    new_pg_database: Callable[[], tuple[str, str]] = new_rec_database
    drop_pg_database: Callable[[str], None] = drop_pg_database


@pytest.fixture(scope="session")
def rec() -> Helpers:
    return Helpers()


@pytest.fixture
def absent_broker() -> Iterator[EmbeddedBroker]:
    """A broker on a free port that is NOT started; the test may start it later."""
    from emergify_cli.broker import free_port

    b = EmbeddedBroker(free_port())
    yield b
    b.stop()
