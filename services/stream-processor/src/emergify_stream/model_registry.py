"""The model registry: trained models as rows of ``model_versions``, and cluster assignment
with the portable (Spark-free) form of a model."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import model_versions, songs

#: Held while the feature table's clusters are written, by the speed layer's sink and by a
#: new model's re-assignment, so a song upserted during re-assignment cannot keep a cluster
#: of the old model (both run in this process).
CLUSTER_WRITE_LOCK = threading.RLock()

_CHUNK_ROWS = 50_000


def assign_clusters(model: PortableModel, features: np.ndarray) -> np.ndarray:
    """Cluster of each row of ``features`` (n x 9, :data:`AUDIO_FEATURES` order).

    ``z = (x - means) / scales``, ``p = z @ components``, nearest centroid (Euclidean) —
    the same arithmetic as Spark's StandardScaler -> PCA -> KMeans.predict.
    """
    x = np.asarray(features, dtype=np.float64).reshape(-1, len(model.means))
    if x.shape[0] == 0:
        return np.empty(0, dtype=np.int64)
    z = (x - np.asarray(model.means)) / np.asarray(model.scales)
    p = z @ np.asarray(model.components)
    centroids = np.asarray(model.centroids)
    out = np.empty(x.shape[0], dtype=np.int64)
    # Exact squared distances (no ||p||^2 - 2p.c shortcut, whose rounding could flip near-ties
    # against Spark), in chunks to bound memory.
    for lo in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = p[lo : lo + _CHUNK_ROWS]
        d = ((chunk[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        out[lo : lo + _CHUNK_ROWS] = d.argmin(axis=1)
    return out


def current_version(conn: Connection) -> int | None:
    """The newest model version, or None before the first model."""
    return conn.execute(sa.select(sa.func.max(model_versions.c.version))).scalar()


class ModelRegistry:
    """Reads and writes ``model_versions``; caches the current portable model."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cached: PortableModel | None = None

    def current(self, conn: Connection | None = None) -> PortableModel | None:
        """The newest model (cached until a newer version appears), or None."""
        if conn is None:
            with self.engine.connect() as own:
                return self.current(own)
        version = current_version(conn)
        if version is None:
            return None
        if self._cached is None or self._cached.version != version:
            artifact = conn.execute(
                sa.select(model_versions.c.artifact).where(model_versions.c.version == version)
            ).scalar_one()
            self._cached = PortableModel.model_validate(artifact)
        return self._cached

    def next_version(self) -> int:
        """The version number the next trained model gets."""
        with self.engine.connect() as conn:
            return (current_version(conn) or 0) + 1

    def publish(
        self, model: PortableModel, metrics: dict[str, Any], spark_model_path: str | None
    ) -> int:
        """Make ``model`` current: insert its row and re-assign every song's cluster, in one
        transaction, under :data:`CLUSTER_WRITE_LOCK`. Returns the number of songs updated."""
        with CLUSTER_WRITE_LOCK, self.engine.begin() as conn:
            conn.execute(
                model_versions.insert().values(
                    version=model.version,
                    trained_at=model.trained_at,
                    k=model.k,
                    silhouette=model.silhouette,
                    songs=model.songs,
                    metrics=metrics,
                    artifact=model.model_dump(mode="json"),
                    spark_model_path=spark_model_path,
                )
            )
            # Every row, read inside the transaction: songs the speed layer upserted while
            # Spark was training get a cluster of the new model too. On SQLite the rows are
            # addressed by rowid, the table's own B-tree key: updating in scan order touches
            # each page once instead of a track_id index lookup per row (2.5x faster at 1M
            # songs; the INSERT above already holds the write lock, so rowids are stable).
            key = "rowid" if conn.dialect.name == "sqlite" else "track_id"
            rows = conn.exec_driver_sql(
                f"SELECT {key}, {', '.join(AUDIO_FEATURES)} FROM {songs.name}"
            ).all()
            if rows:
                keys = [r[0] for r in rows]
                clusters = assign_clusters(model, np.array([r[1:] for r in rows], dtype=float))
                # Straight to the driver's executemany: for 1M songs, SQLAlchemy's per-row
                # parameter handling would cost more than the database's own work.
                mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
                conn.exec_driver_sql(
                    f"UPDATE {songs.name} SET cluster = {mark}, model_version = {mark} "
                    f"WHERE {key} = {mark}",
                    [(c, model.version, k) for k, c in zip(keys, clusters.tolist(), strict=True)],
                )
        self._cached = model
        return len(rows)

    def summary(self) -> dict[str, Any] | None:
        """Version, k, silhouette, trained_at and songs of the current model, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    model_versions.c.version,
                    model_versions.c.k,
                    model_versions.c.silhouette,
                    model_versions.c.trained_at,
                    model_versions.c.songs,
                )
                .order_by(model_versions.c.version.desc())
                .limit(1)
            ).first()
        return dict(row._mapping) if row else None
