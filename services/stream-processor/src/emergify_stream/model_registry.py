"""The model registry: trained models as rows of ``model_versions``, and cluster assignment
with the portable (Spark-free) form of a model."""

from __future__ import annotations

import threading
from collections.abc import Callable
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

#: Songs read, assigned and updated at a time by :func:`reassign_clusters`.
REASSIGN_CHUNK_ROWS = 50_000


def reassign_clusters(
    conn: Connection, model: PortableModel, chunk_rows: int = REASSIGN_CHUNK_ROWS
) -> int:
    """Give every song of the feature table its cluster under ``model`` (and the model's
    version), in ``conn``'s transaction; returns the number of songs.

    Every row is read inside the transaction, so songs the speed layer upserted while Spark
    was training get a cluster of the new model too. The table is walked in key order,
    ``chunk_rows`` songs at a time (read, assign with NumPy, update), so a million songs never
    sit in memory as Python tuples at once.
    On SQLite the key is ``rowid``, the table's own B-tree key: updating in scan order
    touches each page once instead of a ``track_id`` index lookup per row (the caller's
    write already holds the database's write lock, so rowids are stable).
    """
    sqlite = conn.dialect.name == "sqlite"
    key = "rowid" if sqlite else "track_id"
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    select = f"SELECT {key}, {', '.join(AUDIO_FEATURES)} FROM {songs.name}"
    # Straight to the driver: for 1M songs, SQLAlchemy's per-row result and parameter
    # handling would cost more than the database's own work.
    update = (
        f"UPDATE {songs.name} SET cluster = {mark}, model_version = {model.version} "
        f"WHERE {key} = {mark}"
    )
    cursor = conn.connection.cursor()  # the DBAPI cursor, in the caller's transaction
    try:
        total, last = 0, None
        while True:
            after = "" if last is None else f" WHERE {key} > {mark}"
            cursor.execute(
                f"{select}{after} ORDER BY {key} LIMIT {int(chunk_rows)}",
                () if last is None else (last,),
            )
            rows = cursor.fetchall()
            if not rows:
                return total
            keys = [r[0] for r in rows]
            features = np.array([r[1:] for r in rows], dtype=np.float64)
            clusters = model.assign(features).tolist()
            cursor.executemany(update, zip(clusters, keys, strict=True))
            total += len(rows)
            last = keys[-1]
    finally:
        cursor.close()


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
        self,
        model: PortableModel,
        metrics: dict[str, Any],
        spark_model_path: str | None,
        before_commit: Callable[[], object] | None = None,
        in_transaction: Callable[[Connection], object] | None = None,
    ) -> int:
        """Make ``model`` current: insert its row and re-assign every song's cluster, in one
        transaction, under :data:`CLUSTER_WRITE_LOCK`. Returns the number of songs updated.

        ``in_transaction`` runs after the re-assignment with the transaction's connection (the
        batch layer writes the model's artist profiles there, so no reader sees the model
        without them); ``before_commit`` runs last, inside the transaction: if either raises,
        nothing is published (the batch layer waits there for the Spark model it saves).
        """
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
            updated = reassign_clusters(conn, model)
            if in_transaction is not None:
                in_transaction(conn)
            if before_commit is not None:
                before_commit()
        self._cached = model
        return updated

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
