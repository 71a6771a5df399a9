"""A Spark standalone cluster for the cluster tests: one master and two workers (one core
each, bounded memory), separate JVMs started from the pyspark wheel by the same runner
``emergify up`` uses with ``EMERGIFY_SPARK_CLUSTER=1``. Stopped (and every JVM killed) after
the test, even when it fails."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emergify_cli.spark_cluster import SparkCluster


@pytest.fixture
def spark_cluster(tmp_path: Path) -> Iterator[SparkCluster]:
    cluster = SparkCluster(tmp_path / "spark", workers=2, worker_cores=1, worker_memory="768m")
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
