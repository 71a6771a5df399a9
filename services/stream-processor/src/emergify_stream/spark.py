"""The one way to build a SparkSession for Emergify (driver, tests, batch layer)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pyspark.sql import SparkSession


def build_spark_session(
    master: str = "local[2]", app_name: str = "emergify", **conf: Any
) -> SparkSession:
    """Start (or reuse) a SparkSession with Arrow on, few shuffle partitions, no UI, the
    FAIR scheduler's pools (:mod:`emergify_stream.scheduler_pools`) and the
    ``emergify_kafka`` streaming source registered.

    ``conf`` holds extra Spark settings by their full names, e.g.
    ``**{"spark.driver.memory": "2g"}``.
    """
    # Python workers must run this interpreter (the project's venv), not whatever is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from emergify_stream.config import get_settings
    from emergify_stream.scheduler_pools import scheduler_conf

    conf = {**scheduler_conf(get_settings()), **conf}
    if not master.startswith("local"):
        conf = {**cluster_conf(), **conf}
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "4")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
    )
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")

    from emergify_stream.speed.kafka_source import KafkaDataSource

    spark.dataSource.register(KafkaDataSource)
    return spark


def cluster_conf() -> dict[str, str]:
    """Spark settings for a cluster master (``spark://...``): the executors' heap and
    interpreter, and the driver's address, from the stream processor's settings.

    The executors' Python runs tasks of the Kafka source and the cleaning SQL: it must have
    ``emergify_stream`` importable. PySpark sends the driver's ``PYSPARK_PYTHON`` path with
    every task, so that variable is set to the executors' interpreter too.
    """
    from emergify_stream.config import get_settings

    settings = get_settings()
    python = settings.spark_executor_python or os.environ.get("PYSPARK_PYTHON") or sys.executable
    os.environ["PYSPARK_PYTHON"] = python
    conf = {
        "spark.executor.memory": settings.spark_executor_memory,
        "spark.pyspark.python": python,
        "spark.executorEnv.PYSPARK_PYTHON": python,
    }
    if settings.spark_driver_host:
        conf["spark.driver.host"] = settings.spark_driver_host
        conf["spark.driver.bindAddress"] = settings.spark_driver_host
    return conf
