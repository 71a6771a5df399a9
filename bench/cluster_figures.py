"""The batch and speed layers on a Spark standalone cluster vs local[2], in one run.

    uv run python bench/cluster_figures.py            # retrain on 1,000,000 songs
    uv run python bench/cluster_figures.py --quick    # 100,000 songs, fewer latency probes

1. Batch retrain: the same master dataset (bench/batch_retrain.py's synthetic catalog and
   lake layout) is retrained by ``run_batch_layer`` once on ``local[2]`` and once on a
   standalone master with two workers (one core each; executors in their own JVMs), each in a
   child process of its own (a fresh driver JVM). Spark's start-up is reported apart.
2. Micro-batch latency: the stream processor (``python -m emergify_stream``) runs against the
   cluster and then against local[2]; songs are produced one at a time to the embedded broker
   and the time from the broker's ack to the song's row in the feature table is taken per
   song (trigger interval 0.5 s, so about 0.25 s of each figure is waiting for a trigger).

Results go to bench/results/cluster.json. Two cores are shared by everything on this machine:
the cluster's two executors and the driver compete for them, so compare the two modes from
the same run, on a quiet machine (the load average is printed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from batch_retrain import fill_feature_table, lake_tables, write_lake  # noqa: E402

# The stream processor's internal credential (ignored where services do not check one).
TOKEN = secrets.token_urlsafe(32)
INTERNAL = {"X-Emergify-Internal-Token": TOKEN}
WORKER_MEMORY = "2g"
EXECUTOR_MEMORY = "1536m"


def retrain_in_fresh_jvm(master: str, work: Path, bootstrap: str) -> dict:
    """``retrain`` in a child process, so each mode pays its own JVM start and neither
    inherits the other's warm (JIT-compiled) driver."""
    out = subprocess.run(
        [
            sys.executable,
            __file__,
            "--retrain-on",
            master,
            "--work",
            str(work),
            "--bootstrap",
            bootstrap,
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def retrain(master: str, work: Path, bootstrap: str) -> dict:
    """One batch-layer run in a new SparkSession on ``master``; seconds per stage."""
    from emergify_contracts.tables import create_tables, make_engine
    from emergify_stream.batch.model_training import run_batch_layer
    from emergify_stream.config import Settings
    from emergify_stream.model_registry import ModelRegistry
    from emergify_stream.publisher import EventPublisher
    from emergify_stream.spark import build_spark_session

    tag = "cluster" if master.startswith("spark") else "local"
    db = work / f"emergify-{tag}.db"
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{db}",
        lake_uri=str(work / "lake"),
        models_dir=str(work / "models" / tag),
        kafka_bootstrap_servers=bootstrap,
        spark_master=master,
        spark_executor_memory=EXECUTOR_MEMORY,
    )
    engine = make_engine(settings.database_url)
    create_tables(engine)
    fill_feature_table(engine, pickle.loads((work / "latest.pickle").read_bytes()))
    t = time.perf_counter()
    spark = build_spark_session(
        master,
        "emergify-bench-cluster-retrain",
        **{"spark.driver.memory": settings.spark_driver_memory},
        **({} if master.startswith("local") else {"spark.executor.memory": EXECUTOR_MEMORY}),
    )
    start_s = time.perf_counter() - t
    publisher = EventPublisher(
        bootstrap, settings.songs_dlq_topic, settings.catalog_changes_topic, settings.models_topic
    )
    try:
        t = time.perf_counter()
        run = run_batch_layer(spark, engine, settings, ModelRegistry(engine), publisher)
        total_s = time.perf_counter() - t
    finally:
        publisher.close()
        spark.stop()
        engine.dispose()
    return {
        "master": master,
        "spark_start_s": round(start_s, 2),
        "total_s": round(total_s, 2),
        "stages_s": {k: round(v, 2) for k, v in run.timings.items()},
        "k": run.model.k,
        "silhouette": round(run.model.silhouette, 4),
        "fit_rows": run.metrics["fit_rows"],
    }


def stream_latency(master: str, work: Path, bootstrap: str, probes: int) -> dict:
    """Produce ``probes`` songs one by one; seconds from ack to feature-table row."""
    import sqlalchemy as sa
    from catalog_fixtures import song_event
    from kafka_io import produce

    from emergify_cli.broker import create_topics, free_port
    from emergify_contracts.tables import make_engine, songs

    tag = "cluster" if master.startswith("spark") else "local"
    url = f"http://127.0.0.1:{free_port()}"
    db = work / f"stream-{tag}.db"
    topic = f"songs.bench.{tag}"
    env = {
        **os.environ,
        "EMERGIFY_SPARK_MASTER": master,
        "EMERGIFY_SPARK_EXECUTOR_MEMORY": EXECUTOR_MEMORY,
        "EMERGIFY_SPARK_DRIVER_HOST": "127.0.0.1",
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EMERGIFY_DATABASE_URL": f"sqlite:///{db}",
        "EMERGIFY_CHECKPOINT_DIR": str(work / f"checkpoint-{tag}"),
        "EMERGIFY_MODELS_DIR": str(work / f"models-{tag}"),
        "EMERGIFY_LAKE_URI": str(work / f"lake-{tag}"),
        "EMERGIFY_STREAM_PROCESSOR_URL": url,
        "EMERGIFY_SONGS_TOPIC": topic,
        "EMERGIFY_AUTO_RETRAIN": "false",
        "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
        "EMERGIFY_LOG_LEVEL": "WARNING",
        "EMERGIFY_INTERNAL_TOKEN": TOKEN,
    }
    create_topics(bootstrap, [topic], 3)
    log = (work / f"processor-{tag}.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "emergify_stream"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    engine = make_engine(env["EMERGIFY_DATABASE_URL"])
    latencies: list[float] = []
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the stream processor exited; see {log.name}")
            try:
                if httpx.get(f"{url}/health", timeout=2, headers=INTERNAL).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the stream processor never became healthy")
            time.sleep(0.5)
        # Warm-up: the first micro-batches compile code and start Python workers.
        produce(bootstrap, topic, [song_event(i, salt=1_000_003) for i in range(200)])
        deadline = time.monotonic() + 300
        while True:  # until the warm-up songs are in the table
            try:
                with engine.connect() as conn:
                    done = conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()
            except sa.exc.DBAPIError:  # no table before the first micro-batch
                done = 0
            if done >= 200:
                break
            if time.monotonic() > deadline:
                raise TimeoutError("the warm-up songs never reached the feature table")
            time.sleep(0.2)
        for i in range(probes):
            key, value = song_event(i, salt=2_000_003)  # ids apart from the warm-up's
            produce(bootstrap, topic, [(key, value)], linger_ms=0)
            acked = time.perf_counter()
            while True:
                with engine.connect() as conn:
                    found = conn.execute(
                        sa.select(songs.c.track_id).where(songs.c.track_id == key.decode())
                    ).first()
                if found:
                    latencies.append(time.perf_counter() - acked)
                    break
                if time.perf_counter() - acked > 120:
                    raise TimeoutError(f"probe {i} never reached the feature table")
                time.sleep(0.02)
            time.sleep(0.3)  # spread probes over the trigger's phase
        status = httpx.get(f"{url}/admin/status", timeout=30, headers=INTERNAL).json()
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        proc.wait()
        log.close()
        engine.dispose()
    latencies.sort()
    return {
        "master": master,
        "probes": len(latencies),
        "ack_to_row_s": {
            "p50": round(statistics.median(latencies), 3),
            "p95": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
            "max": round(latencies[-1], 3),
        },
        "micro_batches": (status.get("last_batch_id") or 0) + 1,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100,000 songs, 20 probes")
    parser.add_argument("--songs", type=int, default=None)
    parser.add_argument("--probes", type=int, default=None)
    parser.add_argument("--skip-retrain", action="store_true")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--retrain-on", help=argparse.SUPPRESS)  # the child process's job
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.retrain_on:
        print(json.dumps(retrain(args.retrain_on, Path(args.work), args.bootstrap)))
        return
    n = args.songs or (100_000 if args.quick else 1_000_000)
    probes = args.probes or (20 if args.quick else 60)
    load_at_start = os.getloadavg()
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
    from emergify_cli.spark_cluster import SparkCluster
    from emergify_contracts.settings import EmergifySettings

    work = Path(tempfile.mkdtemp(prefix="emergify-bench-cluster-"))
    broker = EmbeddedBroker(free_port()).start()
    cluster = SparkCluster(work / "spark", workers=2, worker_cores=1, worker_memory=WORKER_MEMORY)
    out: dict = {"songs": n, "cpus": os.cpu_count(), "workers": "2 x (1 core, 2g)"}
    try:
        create_topics(broker.bootstrap, EmergifySettings(_env_file=None).topics(), 3)  # type: ignore[call-arg]
        cluster.start()
        if not args.skip_retrain:
            tables, latest = lake_tables(n, 20, resend=0.01)
            write_lake(work / "lake", tables)
            del tables
            (work / "latest.pickle").write_bytes(pickle.dumps(latest))
            del latest
            out["retrain"] = [
                retrain_in_fresh_jvm("local[2]", work, broker.bootstrap),
                retrain_in_fresh_jvm(cluster.master_url, work, broker.bootstrap),
            ]
            for r in out["retrain"]:
                print(
                    f"retrain {n:,} songs on {r['master']:<28} {r['total_s']:7.1f} s "
                    f"(SparkSession start {r['spark_start_s']:.1f} s apart; k={r['k']})",
                    flush=True,
                )
        if not args.skip_latency:
            out["latency"] = [
                stream_latency(cluster.master_url, work, broker.bootstrap, probes),
                stream_latency("local[2]", work, broker.bootstrap, probes),
            ]
            for r in out["latency"]:
                q = r["ack_to_row_s"]
                print(
                    f"ack -> feature-table row on {r['master']:<28} p50 {q['p50']:.2f} s, "
                    f"p95 {q['p95']:.2f} s, max {q['max']:.2f} s ({r['probes']} songs)",
                    flush=True,
                )
    finally:
        cluster.stop()
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    out["load_average_at_start"] = load_at_start
    out["load_average_at_end"] = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs; load average {load_at_start[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    RESULTS.mkdir(exist_ok=True)
    name = "cluster_quick.json" if args.quick or args.songs else "cluster.json"
    (RESULTS / name).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
