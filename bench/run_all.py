"""Run every benchmark in bench/ in turn; each prints its own figures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    "evaluation.py",
    "ranking_speed.py",
    "ranking_kernel.py",
    "recommender_memory.py",
    "batch_retrain.py",
    "cluster_figures.py",
    "pipeline_figures.py",
    "ingest_throughput.py",
    "replica_throughput.py",
    "feedback_latency.py",
    "living_match.py",
    "living_latency.py",
]

if __name__ == "__main__":
    failed = 0
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        failed |= subprocess.call([sys.executable, str(HERE / name)])
    sys.exit(failed)
