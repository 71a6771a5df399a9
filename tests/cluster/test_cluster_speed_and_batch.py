"""The speed and batch layers on a Spark standalone cluster: the stream processor's driver
submits to ``spark://``, the Kafka source's partitions are read by executors in the workers'
JVMs, one worker is SIGKILLed mid-stream, and the feature table still ends with every song
exactly once; a retrain on the same cluster publishes the usual model contract."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from catalog_fixtures import song_event
from kafka_io import produce

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_cli.spark_cluster import SparkCluster
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import make_engine, model_versions, songs, stream_batches

N_SONGS = 6_000
# The credential internal services require of their callers (the header is ignored where
# the service does not check it).
INTERNAL_TOKEN = secrets.token_urlsafe(32)
INTERNAL = {"X-Emergify-Internal-Token": INTERNAL_TOKEN}
APP_NAME = "emergify-stream-processor"


class Processor:
    """``python -m emergify_stream`` (the Spark driver) in its own process group."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "emergify_stream"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(60)
        with contextlib.suppress(ProcessLookupError):  # whatever the group left behind
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)


@pytest.fixture
def processor_env(
    broker: EmbeddedBroker, pg_url: str, tmp_path: Path, spark_cluster: SparkCluster
) -> dict[str, str]:
    suffix = tmp_path.name[-10:]
    env = {
        **os.environ,
        "EMERGIFY_SPARK_MASTER": spark_cluster.master_url,
        "EMERGIFY_SPARK_EXECUTOR_MEMORY": "512m",
        "EMERGIFY_SPARK_DRIVER_HOST": "127.0.0.1",
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "EMERGIFY_DATABASE_URL": pg_url,
        # Same paths for driver and executors: on one machine the local disk is shared; on
        # real hosts these must be shared storage (docs/cluster.md).
        "EMERGIFY_CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
        "EMERGIFY_MODELS_DIR": str(tmp_path / "models"),
        "EMERGIFY_LAKE_URI": str(tmp_path / "lake"),
        "EMERGIFY_STREAM_PROCESSOR_URL": f"http://127.0.0.1:{free_port()}",
        "EMERGIFY_SONGS_TOPIC": f"songs.{suffix}",
        "EMERGIFY_SONGS_DLQ_TOPIC": f"dlq.{suffix}",
        "EMERGIFY_CATALOG_CHANGES_TOPIC": f"catalog.{suffix}",
        "EMERGIFY_MODELS_TOPIC": f"models.{suffix}",
        "EMERGIFY_MAX_OFFSETS_PER_TRIGGER": "600",  # many micro-batches: the kill lands mid-stream
        "EMERGIFY_AUTO_RETRAIN": "false",
        "EMERGIFY_K_MAX": "6",
        "EMERGIFY_K_MAX_CAP": "6",
        "EMERGIFY_LOG_LEVEL": "INFO",
        "EMERGIFY_INTERNAL_TOKEN": INTERNAL_TOKEN,
    }
    create_topics(broker.bootstrap, [env["EMERGIFY_SONGS_TOPIC"]], 3)
    return env


@pytest.fixture
def processor(processor_env: dict[str, str], tmp_path: Path) -> Iterator[Processor]:
    proc = Processor(processor_env, tmp_path / "processor.log")
    try:
        yield proc
    finally:
        proc.stop()


def wait_healthy(base_url: str, proc: Processor, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.proc.poll() is None, proc.log_tail()
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base_url}/health", timeout=2, headers=INTERNAL).status_code == 200:
                return
        time.sleep(0.5)
    raise AssertionError("the stream processor never became healthy:\n" + proc.log_tail())


def running_app(cluster: SparkCluster) -> dict:
    apps = [a for a in cluster.state().get("activeapps", []) if a.get("name") == APP_NAME]
    assert len(apps) == 1, cluster.state()
    return apps[0]


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.postgres
def test_worker_sigkill_mid_stream_keeps_exactly_once_and_retrain_publishes_the_model(
    spark_cluster: SparkCluster,
    processor: Processor,
    processor_env: dict[str, str],
    broker: EmbeddedBroker,
    pg_url: str,
) -> None:
    base_url = processor_env["EMERGIFY_STREAM_PROCESSOR_URL"]
    topic = processor_env["EMERGIFY_SONGS_TOPIC"]
    engine = make_engine(pg_url)

    def count() -> int:
        try:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()
        except sa.exc.ProgrammingError:  # the processor has not created the tables yet
            return 0

    events = [song_event(i, label="Cluster") for i in range(N_SONGS)]
    expected = {k.decode() for k, _ in events}

    wait_healthy(base_url, processor)
    # The driver registered with the master, and each worker runs one of its executors.
    assert running_app(spark_cluster)["cores"] == 2
    executors = spark_cluster.executor_pids()
    assert len(executors) == 2

    def send() -> None:
        for lo in range(0, N_SONGS, 500):
            produce(broker.bootstrap, topic, events[lo : lo + 500], linger_ms=20)
            time.sleep(0.2)  # a steady stream, so the kill lands while songs still arrive

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 180
    while count() == 0:
        assert time.monotonic() < deadline, (
            "no song reached the feature table\n" + processor.log_tail()
        )
        time.sleep(0.1)
    spark_cluster.kill_worker(0)
    killed_at = count()
    sender.join(300)
    assert 0 < killed_at < N_SONGS
    assert set(spark_cluster.executor_pids()) < set(executors)  # the killed worker's is gone

    deadline = time.monotonic() + 300
    while count() < N_SONGS:
        assert time.monotonic() < deadline, (
            f"only {count()} of {N_SONGS} songs after the worker died\n" + processor.log_tail()
        )
        time.sleep(0.5)
    status = httpx.get(f"{base_url}/admin/status", timeout=30, headers=INTERNAL).json()
    while status["lag"] is None or status["lag"]["total"] > 0:
        assert time.monotonic() < deadline, f"lag never reached 0: {status}"
        time.sleep(0.5)
        status = httpx.get(f"{base_url}/admin/status", timeout=30, headers=INTERNAL).json()
    assert processor.proc.poll() is None  # the driver survived the lost executor
    assert spark_cluster.alive_workers() == 1

    with engine.connect() as conn:
        ids = [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
        batch_rows = conn.execute(sa.select(sa.func.sum(stream_batches.c.rows))).scalar_one()
    assert len(ids) == len(set(ids)) == N_SONGS
    assert set(ids) == expected
    assert batch_rows == N_SONGS  # every song written by exactly one committed batch

    # The batch layer on the surviving executor: the same model contract as in local mode.
    r = httpx.post(f"{base_url}/admin/retrain", timeout=30, headers=INTERNAL)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 400
    while True:
        with engine.connect() as conn:
            row = conn.execute(sa.select(model_versions)).one_or_none()
        if row is not None:
            break
        assert time.monotonic() < deadline, "no model version\n" + processor.log_tail()
        time.sleep(1)
    model = PortableModel.model_validate(row.artifact)
    assert row.version == model.version == 1 and row.songs == model.songs == N_SONGS
    k_lo, k_hi = row.metrics["k_range"]
    assert row.k == model.k and 4 == k_lo <= model.k <= k_hi == 6
    assert Path(row.spark_model_path, "metadata").is_dir()  # saved by the cluster's executors
    # Every song carries the cluster the portable model gives it (the table is re-assigned
    # in the same run; wait for that write to land).
    while True:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    songs.c.model_version, songs.c.cluster, *(songs.c[f] for f in AUDIO_FEATURES)
                )
            ).all()
        if all(r[0] == 1 for r in rows):
            break
        assert time.monotonic() < deadline, "songs never re-assigned to model 1"
        time.sleep(1)
    features = np.array([r[2:] for r in rows], dtype=float)
    assert np.array_equal(np.array([r[1] for r in rows]), model.assign(features))
    engine.dispose()
