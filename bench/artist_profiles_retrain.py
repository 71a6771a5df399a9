"""Retrain time with and without artist profiles on the sample catalog (same Spark session).

Usage: uv run --frozen python bench/artist_profiles_retrain.py [runs]
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from emergify_contracts.tables import create_tables, make_engine
from emergify_stream.batch.model_training import run_batch_layer
from emergify_stream.config import Settings
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.spark import build_spark_session
from emergify_stream.speed.feature_table import FeatureTableSink

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.stream_processor.test_stream_model_training import catalog_batch

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "every_fresh_find.csv"


def main(runs: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    url = f"sqlite:///{tmp / 'db.sqlite'}"
    engine = make_engine(url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    FeatureTableSink(engine, registry).write("seed", 0, catalog_batch(SAMPLE))
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
