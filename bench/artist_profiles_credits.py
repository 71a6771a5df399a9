"""The batch layer's artist profiles at 1M songs: credits per song vs per distinct artist pair.

    uv run --frozen python bench/artist_profiles_credits.py              # 1,000,000 songs
    uv run --frozen python bench/artist_profiles_credits.py --quick      # 100,000 songs
    EMERGIFY_SPARK_SCHEDULER_MODE=FIFO uv run --frozen python bench/artist_profiles_credits.py

Setup (not timed): bench/batch_retrain.py's master dataset, with the scale run's artists
(bench/scale_end_to_end.py: drawn from the real pool, 85% one, else two), read as the batch
layer reads it (latest version per track id, cached), a model fitted on it, and one untimed
run of each variant on 20,000 songs (Python workers, generated code). Timed, in the same
session, alternately: ``spark_profiles`` as it is (``artist_credits`` once per
distinct (artists, artist_ids) pair, joined back) and the per-song UDF it replaced. Both run
in the batch pool, as a training run does; meanwhile a probe thread in the speed pool runs a
one-task job every 0.2 s and reports how long each took (a micro-batch's wait for a slot).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

from batch_retrain import lake_tables, write_lake  # noqa: E402


def per_song_profiles(spark, frame, model) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    """The replaced form: the credits UDF over every song."""
    from pyspark.sql import functions as F

    from emergify_stream.batch import artist_profiles as ap

    credits = F.udf(lambda a, i: ap._credits(a, i), ap._CREDIT)
    frame.withColumn("credits", credits("artists", "artist_ids")).createOrReplaceTempView(
        ap.SONGS_VIEW
    )
    ap.scaler_frame(spark, model).createOrReplaceTempView(ap.SCALER_VIEW)
    return spark.sql(ap.profile_sql()).toPandas()


def scale_run_artists(tables: list[pa.Table], seed: int = 11) -> list[pa.Table]:
    """The tables with bench/scale_end_to_end.py's artists: 85% one, else two, no ids."""
    from catalogs import real_songs

    pool = [a for s in real_songs() for a in s.artists]
    rng = np.random.default_rng(seed)
    out = []
    for t in tables:
        n = t.num_rows
        first, second = rng.integers(0, len(pool), size=n), rng.integers(0, len(pool), size=n)
        two = rng.random(n) >= 0.85
        artists = [
            [pool[a], pool[b]] if w and a != b else [pool[a]]
            for a, b, w in zip(first.tolist(), second.tolist(), two.tolist(), strict=True)
        ]
        i = t.schema.get_field_index("artists")
        out.append(t.set_column(i, t.schema.field(i), pa.array(artists, t.schema.field(i).type)))
    return out


class SlotProbe:
    """A thread in the speed pool running a one-task job every ``interval`` seconds."""

    def __init__(self, spark, interval: float = 0.2) -> None:  # type: ignore[no-untyped-def]
        self.spark, self.interval = spark, interval
        self.seconds: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from emergify_stream.scheduler_pools import SPEED_POOL, scheduler_pool

        with scheduler_pool(self.spark, SPEED_POOL):
            while not self._stop.wait(self.interval):
                t = time.perf_counter()
                self.spark.range(100, numPartitions=1).toPandas()
                self.seconds.append(time.perf_counter() - t)

    def __enter__(self) -> SlotProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="100,000 songs")
    parser.add_argument("--runs", type=int, default=2, help="timed runs of each variant")
    args = parser.parse_args()
    n = args.songs or (100_000 if args.quick else 1_000_000)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from emergify_stream.batch.artist_profiles import spark_profiles
    from emergify_stream.batch.model_training import fit_pipeline, master_dataset_training_data
    from emergify_stream.config import Settings
    from emergify_stream.scheduler_pools import BATCH_POOL, scheduler_pool
    from emergify_stream.spark import build_spark_session

    work = Path(tempfile.mkdtemp(prefix="emergify-bench-credits-"))
    try:
        tables, _ = lake_tables(n, files=20, resend=0.01)
        write_lake(work / "lake", scale_run_artists(tables))
        del tables
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            lake_uri=str(work / "lake"),
            k_min=4,
            k_max=6,
            k_max_cap=6,
            k_candidates=2,
        )
        spark = build_spark_session(
            settings.spark_master, "emergify-bench-credits", **settings.spark_conf()
        )
        data = master_dataset_training_data(spark, settings)
        assert data is not None
        model = fit_pipeline(data.frame, data.songs, settings, 1).model
        pairs = data.frame.select("artists", "artist_ids").distinct().count()
        print(
            f"{data.songs:,} songs, {pairs:,} distinct (artists, artist_ids) pairs; "
            f"scheduler {spark.sparkContext.getConf().get('spark.scheduler.mode')}",
            flush=True,
        )
        variants: dict[str, Callable] = {"per pair": spark_profiles, "per song": per_song_profiles}
        seconds: dict[str, list[float]] = {v: [] for v in variants}
        probes: dict[str, list[float]] = {v: [] for v in variants}
        results: dict[str, pd.DataFrame] = {}
        warm = data.frame.limit(20_000).cache()
        for profiles in variants.values():  # Python workers started, code generated: untimed
            profiles(spark, warm, model)
        warm.unpersist()
        load = {"before": os.getloadavg()}
        for _ in range(args.runs):
            for name, profiles in variants.items():
                with SlotProbe(spark) as probe, scheduler_pool(spark, BATCH_POOL):
                    t = time.perf_counter()
                    results[name] = profiles(spark, data.frame, model)
                    seconds[name].append(time.perf_counter() - t)
                probes[name] += probe.seconds
                print(f"  {name}: {seconds[name][-1]:.1f} s", flush=True)
        load["after"] = os.getloadavg()
        a, b = (r.set_index("artist_key").sort_index() for r in results.values())
        same = a.index.equals(b.index) and (a["song_count"] == b["song_count"]).all()
        sums = [c for c in a.columns if c.startswith("sum_")]
        close = np.allclose(a[sums].to_numpy(), b[sums].to_numpy(), rtol=1e-9, atol=1e-6)
        print(f"same artists and counts: {same}; same sums: {close}; artists: {len(a):,}")
        for name in variants:
            p = sorted(probes[name])
            wait = (
                f"p50 {statistics.median(p):.2f} s, max {p[-1]:.2f} s over {len(p)} jobs"
                if p
                else "no probe job finished"
            )
            print(
                f"{name}: spark_profiles {min(seconds[name]):.1f} s best of "
                f"{len(seconds[name])} ({', '.join(f'{s:.1f}' for s in seconds[name])}); "
                f"one-task speed-pool job meanwhile: {wait}"
            )
        print(f"load average (1, 5, 15 min): before {load['before']}, after {load['after']}")
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "artist_profiles_credits.json").write_text(
            json.dumps(
                {
                    "songs": data.songs,
                    "pairs": pairs,
                    "scheduler": spark.sparkContext.getConf().get("spark.scheduler.mode"),
                    "seconds": seconds,
                    "speed_pool_job_seconds": probes,
                    "same_result": bool(same and close),
                    "load_average": load,
                },
                indent=1,
            )
        )
        data.release()
        spark.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
