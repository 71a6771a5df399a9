"""Retrain time with and without artist profiles on the sample catalog (same Spark session).

Usage: uv run --frozen python bench/artist_profiles_retrain.py [runs]
"""

from __future__ import annotations

import csv
import json
import sys
import tempfile
from pathlib import Path

import pandas as pd

from emergify_contracts.song import RowError, detect_layout, row_to_song
from emergify_contracts.tables import create_tables, make_engine
from emergify_stream.batch.model_training import run_batch_layer
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.spark import build_spark_session
from emergify_stream.speed.feature_table import BATCH_COLUMNS, FeatureTableSink

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "every_fresh_find.csv"


def sample_batch() -> pd.DataFrame:
    """The sample catalog as one clean micro-batch."""
    with SAMPLE.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        rows = []
        for i, record in enumerate(reader):
            try:
                row = row_to_song(record, layout).model_dump()
            except RowError:
                continue
            row.update(
                upload_id="bench",
                source="csv",
                kafka_partition=0,
                kafka_offset=i,
                ingested_at=pd.Timestamp("2025-01-01"),
            )
            rows.append(row)
    return pd.DataFrame(rows)[list(BATCH_COLUMNS)]


def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    engine = make_engine(url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    FeatureTableSink(engine, registry).write("seed", 0, sample_batch())
    base = {"database_url": url, "models_dir": str(tmp / "models"), "lake_uri": str(tmp / "no")}
    spark = build_spark_session()
    out: dict[str, list[dict]] = {"with": [], "without": []}
    run_batch_layer(spark, engine, Settings(**base), registry)  # warm-up
    for _ in range(runs):
        for label, flag in (("without", False), ("with", True)):
            run = run_batch_layer(spark, engine, Settings(**base, artist_profiles=flag), registry)
            total = sum(v for k, v in run.timings.items() if k not in ("save", "profiles_write"))
            out[label].append({"total_seconds": round(total, 3), **run.timings})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
