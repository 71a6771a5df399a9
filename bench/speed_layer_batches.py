"""Where a speed-layer micro-batch's time goes: 50,000-song batches and the 1-song batch.

Real embedded broker, real Spark (local[2]) and a real database (SQLite by default,
``--database-url postgresql+psycopg://...`` for PostgreSQL). A seed batch of the sample
catalog and a model with artist profiles are written first, so every batch takes the
production path (clusters assigned, artist profiles kept current). Then ``--songs``
synthetic songs are produced to a 3-partition topic before the query starts, so the
micro-batches are full (``--batch`` records each), and each stage of each batch is timed:
the Spark job (Kafka read, from_json, cleaning, toPandas), the driver's split, and the
sink's stages. Last, ``--singles`` one-song uploads: record acked -> row committed.

Run: ``uv run python bench/speed_layer_batches.py [--quick] [--songs N] [--database-url URL]
[--profile out.prof]``; the figures go to ``bench/results/speed_layer_batches.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs
from emergify_contracts.artist_profiles import artist_keys, artist_profiles
from emergify_contracts.events import SongEvent
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import create_tables, make_engine, songs
from emergify_stream import artist_rows
from emergify_stream.artist_rows import ProfileRows, write_profiles
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.spark import build_spark_session
from emergify_stream.speed import feature_table, speed_layer
from emergify_stream.speed.feature_table import FeatureTableSink
from emergify_stream.speed.speed_layer import SpeedLayer

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"

#: Seconds per stage of the batch being processed, by batch id.
STAGES: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
_current: list[int] = [-1]


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        STAGES[_current[0]][name] += time.perf_counter() - start


def timed(owner: Any, attr: str, name: str | None = None) -> None:
    """Time every call of ``owner.attr`` as stage ``name`` (skipped when it does not exist)."""
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with stage(name or attr):
            return fn(*args, **kwargs)

    setattr(owner, attr, wrapper)


class TimedLayer(SpeedLayer):
    """The speed layer with each batch's driver stages timed (and optionally profiled)."""

    profiler: cProfile.Profile | None = None

    def process_batch(self, batch: Any, batch_id: int) -> Any:
        _current[0] = batch_id
        if self.profiler is not None:
            self.profiler.enable()
        try:
            with stage("process_batch (driver total)"):
                return super().process_batch(batch, batch_id)
        finally:
            if self.profiler is not None:
                self.profiler.disable()


def instrument() -> None:
    """Wrap the stages the report shows (names that do not exist any more are skipped)."""
    from pyspark.sql.classic.dataframe import DataFrame

    timed(DataFrame, "toPandas", "spark: read+parse+clean -> toPandas")
    timed(DataFrame, "toArrow", "spark: read+parse+clean -> toArrow")
    timed(speed_layer, "latest_versions")
    timed(speed_layer, "dead_letters")
    for fn in ("frame_to_rows", "frame_to_columns", "song_rows"):
        timed(feature_table, fn)
    for fn in ("_commit", "_upsert_rows", "_update_profiles", "_assign"):
        timed(FeatureTableSink, fn, f"sink.{fn}")
    for fn in ("table_songs", "read_profiles", "standardized_version", "note_song"):
        timed(artist_rows, fn)
        timed(feature_table, fn)
    timed(feature_table, "apply_song_changes")
    timed(ProfileRows, "records", "ProfileRows.records")


def handmade_model(frame: pd.DataFrame) -> PortableModel:
    x = frame[list(AUDIO_FEATURES)].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(3)
    return PortableModel(
        version=1,
        trained_at=datetime.now(UTC),
        means=x.mean(axis=0).tolist(),
        scales=x.std(axis=0).tolist(),
        components=np.eye(9)[:, :5].tolist(),
        centroids=rng.normal(size=(20, 5)).tolist(),
        k=20,
        silhouette=0.3,
        songs=len(frame),
    )


def seed(engine: sa.Engine, registry: ModelRegistry, sink: FeatureTableSink) -> None:
    """The sample catalog in the table, and a model with its artist profiles."""
    real = load_songs(SAMPLE)
    now = datetime.now(UTC)
    rows = []
    for i, s in enumerate(real):
        row = s.model_dump()
        row.update(upload_id="seed", source="csv", ingested_at=now, kafka_partition=0)
        row["kafka_offset"] = i
        rows.append(row)
    frame = pd.DataFrame(rows).drop_duplicates("track_id")
    frame = frame[list(feature_table.BATCH_COLUMNS)]
    sink.write("seed", 0, frame)
    model = handmade_model(frame)
    with engine.connect() as conn:
        stored = conn.execute(
            sa.select(songs.c.artists, songs.c.artist_ids, *(songs.c[f] for f in AUDIO_FEATURES))
        ).all()
    x = np.array([[r._mapping[f] for f in AUDIO_FEATURES] for r in stored], dtype=np.float64)
    keys = [artist_keys(r.artists, r.artist_ids) for r in stored]
    profiles = ProfileRows({}, {}, artist_profiles(model.standardize(x), keys))

    def write(conn: sa.Connection) -> None:
        write_profiles(conn, profiles, model.version, 1)

    registry.publish(model, {}, None, in_transaction=write)


def events(n: int, start: int = 0) -> list[tuple[bytes, bytes]]:
    real = load_songs(SAMPLE)
    out = []
    for s in synthetic_songs(real, n, seed=11 + start):
        event = SongEvent(upload_id="bench", source="json", song=s)
        out.append((s.track_id.encode(), event.model_dump_json().encode()))
    return out


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        for f in futures:
            await f
        return time.perf_counter()
    finally:
        await producer.stop()


def wait(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(interval)


def count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=50_000)
    parser.add_argument("--singles", type=int, default=20)
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--profile", type=Path, default=None, help="cProfile the driver here")
    parser.add_argument("--json", type=Path, default=RESULTS / "speed_layer_batches.json")
    parser.add_argument("--quick", action="store_true", help="20k songs in 10k batches, 5 singles")
    args = parser.parse_args(argv)
    if args.quick:
        args.songs, args.batch, args.singles = 20_000, 10_000, 5
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    work = Path(tempfile.mkdtemp(prefix="emergify-speed-bench-"))
    url = args.database_url or f"sqlite:///{work / 'emergify.db'}"
    broker = EmbeddedBroker(free_port()).start()
    spark = build_spark_session(master="local[2]", app_name="speed-bench")
    instrument()
    settings = Settings(
        kafka_bootstrap_servers=broker.bootstrap,
        songs_topic="songs.bench",
        database_url=url,
        checkpoint_dir=str(work / "checkpoint"),
        max_offsets_per_trigger=args.batch,
        broker_watch_interval_seconds=0,
    )
    create_topics(broker.bootstrap, [settings.songs_topic], 3)
    engine = make_engine(url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    sink = FeatureTableSink(engine, registry)
    seed(engine, registry, sink)
    base = count(engine)
    records = events(args.songs)
    asyncio.run(_produce(broker.bootstrap, settings.songs_topic, records))
    layer = TimedLayer(spark, settings, sink)
    if args.profile:
        layer.profiler = cProfile.Profile()
    figures: dict[str, Any] = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "load_before": os.getloadavg(),
        "database": sa.engine.make_url(url).get_backend_name(),
        "songs": args.songs,
        "batch": args.batch,
    }
    started = time.perf_counter()
    query = layer.start()
    try:
        wait(lambda: count(engine) >= base + args.songs, 1800, "every song", 0.2)
        bulk_s = time.perf_counter() - started
        if layer.profiler is not None:
            layer.profiler.dump_stats(args.profile)
            layer.profiler = None
        progress = list(query.recentProgress)
        big = [p for p in progress if p["numInputRows"] > 0]
        figures["bulk_seconds_incl_first_trigger"] = round(bulk_s, 2)
        figures["bulk_songs_per_s"] = round(args.songs / bulk_s)
        figures["batches"] = [
            {"batch_id": p["batchId"], "rows": p["numInputRows"], **p["durationMs"]} for p in big
        ]
        full = [p for p in big if p["numInputRows"] >= args.batch]
        if full:
            ms = [p["durationMs"]["triggerExecution"] for p in full]
            figures["full_batch_trigger_ms_median"] = float(np.median(ms))
            figures["full_batch_songs_per_s"] = round(args.batch / (np.median(ms) / 1000))
        figures["stages_by_batch"] = {
            b: {k: round(v, 3) for k, v in s.items()} for b, s in sorted(STAGES.items())
        }
        # One-song uploads, one at a time: acked -> committed in the table.
        singles = events(args.singles, start=1)
        latencies, single_batches = [], []
        for rec in singles:
            n = count(engine)
            acked = asyncio.run(_produce(broker.bootstrap, settings.songs_topic, [rec]))
            wait(lambda n=n: count(engine) > n, 60, "the single song")
            latencies.append(time.perf_counter() - acked)
            time.sleep(0.3)
        for p in query.recentProgress:
            if p["numInputRows"] == 1:
                single_batches.append({"batch_id": p["batchId"], **p["durationMs"]})
        figures["single_acked_to_row_s"] = {
            "p50": round(float(np.percentile(latencies, 50)), 3),
            "p95": round(float(np.percentile(latencies, 95)), 3),
            "max": round(max(latencies), 3),
        }
        if single_batches:
            keys = single_batches[-1].keys() - {"batch_id"}
            figures["single_batch_duration_ms_median"] = {
                k: float(np.median([b.get(k, 0) for b in single_batches])) for k in sorted(keys)
            }
            ids = {b["batch_id"] for b in single_batches}
            stages = [s for b, s in STAGES.items() if b in ids]
            figures["single_batch_stages_median_ms"] = {
                k: round(1000 * float(np.median([s.get(k, 0.0) for s in stages])), 1)
                for k in sorted({k for s in stages for k in s})
            }
        figures["load_after"] = os.getloadavg()
    finally:
        layer.stop()
        spark.stop()
        broker.stop()
    text = json.dumps(figures, indent=1, default=str)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(text)


if __name__ == "__main__":
    main()
