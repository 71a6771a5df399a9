"""Fixtures of the recommender tests: the sample catalog, a model fitted with NumPy (no
Spark), a database seeded with both, a running app, and a way to publish events.

Everything is real: SQLite and PostgreSQL databases, the embedded broker, the app with its
lifespan (TestClient as a context manager).
"""

from __future__ import annotations

import asyncio
import csv
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from fastapi.testclient import TestClient
from pydantic import BaseModel
from sqlalchemy.engine import Engine

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.model import PortableModel
from emergify_contracts.song import RowError, Song, detect_layout, row_to_song
from emergify_contracts.tables import (
    create_tables,
    make_engine,
    model_versions,
    songs,
    stream_batches,
)
from emergify_recommender.config import Settings
from emergify_recommender.index import LoadedModel, SongIndex, SongRecord, build_index
from emergify_recommender.main import create_app

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"
PG_ADMIN_DSN = os.environ.get(
    "EMERGIFY_TEST_PG_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)
T = TypeVar("T")


# --- the sample catalog and a model ------------------------------------------------------


def read_sample_songs(path: Path = SAMPLE_CSV) -> list[Song]:
    """Every valid song of the sample CSV (Exportify layout, UTF-8 with BOM)."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        out: dict[str, Song] = {}
        for row in reader:
            try:
                song = row_to_song(row, layout)
            except RowError:
                continue
            out[song.track_id] = song
    return list(out.values())


def song_row(song: Song, table_version: int, **overrides: Any) -> dict[str, Any]:
    """A ``songs`` table row for ``song``, as the stream processor would write it."""
    now = datetime.now(UTC)
    row = song.model_dump()
    row.update(
        cluster=None,
        model_version=None,
        upload_id="test",
        source="csv:exportify",
        ingested_at=now,
        kafka_partition=-1,
        kafka_offset=None,
        table_version=table_version,
        updated_at=now,
    )
    row.update(overrides)
    return row


def feature_matrix(rows: list[Song]) -> np.ndarray:
    return np.array([s.features() for s in rows], dtype=np.float64)


def fit_portable_model(
    x: np.ndarray, k: int, version: int, seed: int = 7, n_components: int = 5
) -> PortableModel:
    """StandardScaler -> PCA -> KMeans (Lloyd, k-means++ seeding) in NumPy, deterministic."""
    means = x.mean(axis=0)
    scales = x.std(axis=0, ddof=1)  # Spark's StandardScaler uses the sample std
    scales = np.where(scales > 0, scales, 1.0)
    z = (x - means) / scales
    _, s, vt = np.linalg.svd(z - z.mean(axis=0), full_matrices=False)
    components = vt[:n_components].T
    p = z @ components
    rng = np.random.default_rng(seed)
    centroids = [p[rng.integers(len(p))]]
    for _ in range(1, k):
        d2 = np.min([((p - c) ** 2).sum(axis=1) for c in centroids], axis=0)
        centroids.append(p[rng.choice(len(p), p=d2 / d2.sum())])
    c = np.array(centroids)
    for _ in range(30):
        labels = ((p[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
        c = np.array(
            [p[labels == j].mean(axis=0) if (labels == j).any() else c[j] for j in range(k)]
        )
    variance = s**2 / (s**2).sum()
    return PortableModel(
        version=version,
        trained_at=datetime.now(UTC),
        means=means.tolist(),
        scales=scales.tolist(),
        components=components.tolist(),
        centroids=c.tolist(),
        k=k,
        silhouette=_silhouette(p, labels, rng),
        songs=len(x),
        explained_variance=variance[:n_components].tolist(),
    )


def _silhouette(p: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> float:
    idx = rng.choice(len(p), size=min(400, len(p)), replace=False)
    q, lab = p[idx], labels[idx]
    d = np.sqrt(((q[:, None, :] - q[None]) ** 2).sum(axis=2))
    scores = []
    for i in range(len(q)):
        own = lab == lab[i]
        if own.sum() < 2:
            continue
        a = d[i, own].sum() / (own.sum() - 1)
        b = min(d[i, lab == o].mean() for o in set(lab.tolist()) - {lab[i]})
        scores.append((b - a) / max(a, b))
    return float(np.mean(scores))


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
        with self.engine.begin() as conn:
            conn.execute(
                model_versions.insert().values(
                    version=model.version,
                    trained_at=model.trained_at,
                    k=model.k,
                    silhouette=model.silhouette,
                    songs=model.songs,
                    metrics=metrics or {"silhouette_by_k": {str(model.k): model.silhouette}},
                    artifact=model.model_dump(mode="json"),
                )
            )


def new_pg_database() -> tuple[str, str]:
    name = f"emergify_rec_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
        client = TestClient(create_app(settings))
        client.__enter__()
        started.append(client)
        return client

    yield start
    for client in reversed(started):
        client.__exit__(None, None, None)


def publish_raw(bootstrap: str, topic: str, value: bytes, key: str | None = None) -> None:
    """Produce one record the way the stream processor does (acks=all, no idempotence)."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode() if key else None)
        finally:
            await producer.stop()

    asyncio.run(send())


def publish(bootstrap: str, topic: str, key: str, event: BaseModel) -> None:
    """Produce one event envelope as JSON."""
    publish_raw(bootstrap, topic, event.model_dump_json().encode(), key)


def wait_until(check: Callable[[], T | None], timeout: float = 30.0, what: str = "") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


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
    wait_until: Callable[..., Any] = wait_until
    open_catalog_db: Callable[[str], CatalogDb] = open_catalog_db
    new_pg_database: Callable[[], tuple[str, str]] = new_pg_database
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
