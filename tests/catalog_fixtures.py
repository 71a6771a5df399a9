"""The sample catalog for tests: its songs, feature-table rows, a seeded database, a NumPy model.

Importable as ``catalog_fixtures`` (pytest puts tests/ on the path). The model is fitted the
way the batch layer does it (StandardScaler -> PCA -> KMeans) but with NumPy, so tests need no
Spark.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

from emergify_contracts.events import SongEvent
from emergify_contracts.model import PortableModel
from emergify_contracts.song import RowError, Song, detect_layout, row_to_song
from emergify_contracts.tables import create_tables, make_engine, model_versions, songs

SAMPLE_CSV = Path(__file__).resolve().parents[1] / "data" / "every_fresh_find.csv"


def read_sample_songs(path: Path = SAMPLE_CSV) -> list[Song]:
    """Every valid song of the sample CSV (Exportify layout, UTF-8 with BOM), one per id."""
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


def seed_catalog(url: str, upload_id: str = "test") -> dict[str, dict[str, Any]]:
    """Write the sample CSV's songs into the feature table at ``url``; return the rows by id."""
    engine = make_engine(url)
    create_tables(engine)
    now = datetime.now(UTC)  # one load, one timestamp, as a single micro-batch would have
    rows = {
        song.track_id: song_row(song, 1, upload_id=upload_id, ingested_at=now, updated_at=now)
        for song in read_sample_songs()
    }
    with engine.begin() as conn:
        conn.execute(songs.insert(), list(rows.values()))
    engine.dispose()
    return rows


def feature_matrix(rows: list[Song]) -> np.ndarray:
    """The songs' ranking features (``AUDIO_FEATURES`` order), one row per song."""
    return np.array([s.features() for s in rows], dtype=np.float64)


def fit_portable_model(
    x: np.ndarray,
    k: int,
    version: int,
    seed: int = 7,
    n_components: int = 5,
    iterations: int = 30,
    silhouette_sample: int = 400,
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
    for _ in range(iterations):
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
        silhouette=_silhouette(p, labels, rng, silhouette_sample),
        songs=len(x),
        explained_variance=variance[:n_components].tolist(),
    )


def _silhouette(p: np.ndarray, labels: np.ndarray, rng: np.random.Generator, sample: int) -> float:
    """Mean silhouette over a random sample of points (singleton clusters score nothing)."""
    idx = rng.choice(len(p), size=min(sample, len(p)), replace=False)
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


def json_song(track_id: str = "5P6nbeGMqnAGwqt9rrraaQ", **changes: Any) -> dict[str, Any]:
    """One song as a JSON body for ``POST /api/v1/songs`` (a real row of the sample CSV)."""
    return {
        "track_id": track_id,
        "name": "Just a Little",
        "artists": ["Lauren Faith"],
        "artist_ids": ["5Y4KzJ4mRooyCG3qmIqOtd"],
        "release_date": "2018-08-16",
        "popularity": 38,
        "danceability": 0.781,
        "energy": 0.588,
        "loudness": -8.09,
        "speechiness": 0.192,
        "acousticness": 0.248,
        "instrumentalness": 0.156,
        "liveness": 0.134,
        "valence": 0.515,
        "tempo": 109.929,
        **changes,
    }


BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def track_id(i: int) -> str:
    """A valid Spotify-style id (22 base62 digits), distinct for each ``i`` >= 0."""
    digits = []
    for _ in range(22):
        i, r = divmod(i, 62)
        digits.append(BASE62[r])
    return "".join(reversed(digits))


def song_event(i: int, *, salt: int = 0, label: str = "Generated") -> tuple[bytes, bytes]:
    """(key, value) of a valid ``SongEvent`` for generated song ``i``, as ingest publishes it;
    ``salt`` gives another family of ids, ``label`` names the songs and artists."""
    song = Song(
        track_id=track_id(i * 7919 + 12345 + salt),
        name=f"{label} song {i}",
        artists=[f"{label} artist {i % 500}"],
        danceability=(i % 100) / 100,
        energy=((i * 7) % 100) / 100,
        loudness=-30 + (i % 30),
        speechiness=((i * 3) % 100) / 100,
        acousticness=((i * 11) % 100) / 100,
        instrumentalness=((i * 13) % 100) / 100,
        liveness=((i * 17) % 100) / 100,
        valence=((i * 19) % 100) / 100,
        tempo=60 + i % 120,
    )
    event = SongEvent(
        upload_id=f"{label.lower()}{i // 1000}",
        source="json",
        ingested_at=datetime(2025, 1, 1, tzinfo=UTC),
        song=song,
    )
    return song.track_id.encode(), event.model_dump_json().encode()


def insert_model(
    engine: sa.Engine, model: PortableModel, metrics: dict[str, Any] | None = None
) -> None:
    """Register ``model`` in ``model_versions`` the way the batch layer does."""
    with engine.begin() as conn:
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
