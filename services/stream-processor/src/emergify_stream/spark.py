"""The one way to build a SparkSession for Emergify (driver, tests, batch layer)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pyspark.sql import SparkSession


def build_spark_session(
    master: str = "local[2]", app_name: str = "emergify", **conf: Any
) -> SparkSession:
    """Start (or reuse) a SparkSession with Arrow on, few shuffle partitions, no UI, and the
    ``emergify_kafka`` streaming source registered.

    ``conf`` holds extra Spark settings by their full names, e.g.
    ``**{"spark.driver.memory": "2g"}``.
    """
    # Python workers must run this interpreter (the project's venv), not whatever is on PATH.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
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
