"""Table definitions shared by the services, and the one way to open the database.

SQLite (embedded default) and PostgreSQL (production, tests) are both supported; the
feature table is upserted with ``INSERT .. ON CONFLICT`` which both understand.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from emergify_contracts.artist_profiles import PROFILE_FEATURES
from emergify_contracts.song_schemas import table_columns

metadata = sa.MetaData()

#: The feature table: one row per Spotify track id, latest version wins. The song's columns
#: come from the field table (:mod:`emergify_contracts.song_fields`).
songs = sa.Table(
    "songs",
    metadata,
    *table_columns(),
    sa.Column(
        "artist_keys",
        sa.JSON,
        doc="artist_keys(artists, artist_ids), derived by the sink (docs/similarity.md).",
    ),
    sa.Column("cluster", sa.Integer, doc="Cluster under model_version; null before a model."),
    sa.Column("model_version", sa.Integer),
    sa.Column("upload_id", sa.String(64)),
    sa.Column("source", sa.String(64)),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kafka_partition", sa.Integer, doc="Position of the version stored; -1 = lake."),
    sa.Column("kafka_offset", sa.BigInteger),
    sa.Column("table_version", sa.BigInteger, nullable=False, doc="Micro-batch that wrote it."),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
sa.Index("ix_songs_table_version", songs.c.table_version)

#: Artist sound profiles as running sums per model version (docs/similarity.md,
#: "Integration spec"): the batch layer writes every row of a new model version, the speed
#: layer adds each micro-batch's deltas. Readers divide the sums by ``song_count``.
artist_profiles = sa.Table(
    "artist_profiles",
    metadata,
    sa.Column("model_version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("artist_key", sa.Text, primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("song_count", sa.Integer, nullable=False),
    *(sa.Column(f"sum_{f}", sa.Float, nullable=False) for f in PROFILE_FEATURES),
    sa.Column("genres", sa.JSON, nullable=False, doc="Union over single-artist songs."),
    sa.Column("table_version", sa.BigInteger, nullable=False, doc="Last writer's version."),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
#: The profile columns holding sums, in :data:`PROFILE_FEATURES` order.
PROFILE_SUM_COLUMNS: tuple[str, ...] = tuple(f"sum_{f}" for f in PROFILE_FEATURES)

#: Micro-batches already applied to the feature table, so a replayed batch writes nothing.
stream_batches = sa.Table(
    "stream_batches",
    metadata,
    sa.Column("query_name", sa.String(100), primary_key=True),
    sa.Column("batch_id", sa.BigInteger, primary_key=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("table_version", sa.BigInteger, nullable=False),
    sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
)

#: Model registry: every trained model with its portable form (JSON, no Spark needed).
model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("trained_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("k", sa.Integer, nullable=False),
    sa.Column("silhouette", sa.Float, nullable=False),
    sa.Column("songs", sa.Integer, nullable=False),
    sa.Column("metrics", sa.JSON, nullable=False, doc="silhouette per k, inertia, variance..."),
    sa.Column("artifact", sa.JSON, nullable=False, doc="PortableModel as JSON."),
    sa.Column("spark_model_path", sa.Text),
)


#: Seconds a PostgreSQL connection attempt may take: a database that is restarting answers
#: "not yet" quickly, but one behind a dropped network must not hold a request for minutes.
PG_CONNECT_TIMEOUT_SECONDS = 5


def make_engine(url: str) -> Engine:
    """Open the database at ``url``; for SQLite, create its folder and use WAL so that the
    recommender can read while the stream processor writes. For PostgreSQL, pooled
    connections are checked before use (``pool_pre_ping``), so the first query after a
    database restart reconnects instead of failing on a connection the server closed."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        connect_args={"connect_timeout": PG_CONNECT_TIMEOUT_SECONDS},
    )


#: What SQLAlchemy raises when the database cannot be reached or dropped the connection.
UNREACHABLE_ERRORS: tuple[type[sa.exc.DBAPIError], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
)


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the database could not be reached or dropped the connection
    (restarting, shutting down, network gone): worth retrying later, unlike a bad statement."""
    if isinstance(exc, UNREACHABLE_ERRORS):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated


def create_tables(engine: Engine) -> None:
    """Create every table that does not exist yet, the listener tables included."""
    # The listener tables live in their own module on this metadata; importing it registers them.
    from emergify_contracts import listener  # noqa: F401

    metadata.create_all(engine)
    _add_missing_song_columns(engine)


def _add_missing_song_columns(engine: Engine) -> None:
    """Add the derived ``songs`` columns a database made by an older version lacks (there is
    no migration tool; create_all never alters an existing table)."""
    present = {c["name"] for c in sa.inspect(engine).get_columns(songs.name)}
    with engine.begin() as conn:
        for name in ("artist_keys",):
            if name not in present:
                kind = songs.c[name].type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {songs.name} ADD COLUMN {name} {kind}"))
