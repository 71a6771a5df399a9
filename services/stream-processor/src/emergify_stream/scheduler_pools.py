"""Spark's FAIR scheduler pools: the speed layer's jobs get task slots before the batch layer's.

One SparkSession runs both layers (docs/stream-processor.md, "Sharing Spark between the
layers"). Jobs carry their pool in the ``spark.scheduler.pool`` local property of the JVM
thread that submits them: a streaming query's thread inherits it from the thread that starts
the query, while a Python thread starts without it (hence :func:`in_current_pool`).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from pyspark.util import inheritable_thread_target

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from emergify_stream.config import Settings

#: The streaming queries (songs, feedback) and their micro-batches.
SPEED_POOL = "speed"
#: Training runs: the fit, the artist profiles, the model's save.
BATCH_POOL = "batch"
POOL_PROPERTY = "spark.scheduler.pool"

P = ParamSpec("P")
R = TypeVar("R")


def allocation_xml(speed_weight: int, speed_min_share: int) -> str:
    """The allocation file: ``speed`` with ``speed_weight`` and ``speed_min_share``, ``batch``
    with weight 1 and no minimum share; both share their slots fairly among their own jobs."""
    return f"""<?xml version="1.0"?>
<allocations>
  <pool name="{SPEED_POOL}">
    <schedulingMode>FAIR</schedulingMode>
    <weight>{speed_weight}</weight>
    <minShare>{speed_min_share}</minShare>
  </pool>
  <pool name="{BATCH_POOL}">
    <schedulingMode>FAIR</schedulingMode>
    <weight>1</weight>
    <minShare>0</minShare>
  </pool>
</allocations>
"""


def scheduler_conf(settings: Settings) -> dict[str, str]:
    """Spark settings of the scheduler: FAIR with the pools of :func:`allocation_xml` (the
    file is written next to the other temporary files, named by its content), or FIFO."""
    if settings.spark_scheduler_mode == "FIFO":
        return {"spark.scheduler.mode": "FIFO"}
    xml = allocation_xml(settings.speed_pool_weight, settings.speed_pool_min_share)
    digest = hashlib.sha256(xml.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"emergify-fair-scheduler-{digest}.xml"
    if not path.is_file():
        # The scheduler runs in the driver: a local file serves a cluster master too.
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(xml, encoding="utf-8")
        partial.replace(path)
    return {"spark.scheduler.mode": "FAIR", "spark.scheduler.allocation.file": str(path)}


@contextmanager
def scheduler_pool(spark: SparkSession, pool: str) -> Iterator[None]:
    """Jobs this thread submits meanwhile (and streaming queries it starts, for their whole
    life) run in ``pool``; the thread's previous pool is restored afterwards."""
    sc = spark.sparkContext
    before = sc.getLocalProperty(POOL_PROPERTY)
    sc.setLocalProperty(POOL_PROPERTY, pool)
    try:
        yield
    finally:
        sc.setLocalProperty(POOL_PROPERTY, before)  # type: ignore[arg-type]  (None unsets)


def in_current_pool(spark: SparkSession, target: Callable[P, R]) -> Callable[P, R]:
    """``target`` for another Python thread, with this thread's Spark local properties (its
    pool among them), captured now: a new Python thread gets a JVM thread without them."""
    return inheritable_thread_target(spark)(target)  # type: ignore[no-any-return]
