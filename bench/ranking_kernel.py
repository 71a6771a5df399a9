"""The ranking kernel alone at large sizes (no SongIndex: no text columns to build), beside
FAISS IndexFlat L1 (1 thread): CPU time per single query, k=30 (m=54 fetched, as
``ranking.rank`` asks for 30 songs with one blocked seed).

    uv run --all-groups python bench/ranking_kernel.py --songs 10000000 --shape marginals

The cells are built as the service builds them (``cells.build_cells``); the standardization
is the catalog's own mean and sample std. Prints CPU p50/p99 over the queries and the load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalogs import SHAPES, synthetic_catalog

from emergify_recommender import nearest
from emergify_recommender.cells import build_cells

FETCH = 54


def cpu_ms(fn, queries: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    out = []
    for s in queries:
        t = time.process_time()
        fn(int(s))
        out.append(time.process_time() - t)
    ms = np.array(out) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 99))


def main() -> None:
    import faiss

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=10_000_000)
    parser.add_argument("--shape", default="marginals", choices=SHAPES)
    parser.add_argument("--queries", type=int, default=100)
    args = parser.parse_args()
    cat = synthetic_catalog(args.songs, shape=args.shape)
    raw = cat.features
    means, scales = raw.mean(axis=0), raw.std(axis=0, ddof=1)
    z = (raw - means) / scales
    weights = np.ones(raw.shape[1])
    cells = build_cells(raw, z, cat.popularity)
    queries = np.random.default_rng(1).choice(args.songs, args.queries, replace=False)
    nearest.warm()
    faiss.omp_set_num_threads(1)
    z32 = z.astype(np.float32)
    flat = faiss.IndexFlat(z32.shape[1], faiss.METRIC_L1)
    flat.add(z32)
    rows = {
        "faiss IndexFlat L1, 1 thread": cpu_ms(lambda s: flat.search(z32[s : s + 1], 31), queries),
        "kernel": cpu_ms(
            lambda s: nearest.search(cells, means, scales, weights, z[s], FETCH), queries
        ),
        "kernel, max_popularity=0": cpu_ms(
            lambda s: nearest.search(cells, means, scales, weights, z[s], FETCH, 0), queries
        ),
    }
    load = os.getloadavg()[0]
    print(f"{args.songs:,} songs, {args.shape}, {cells.n_cells} cells, load {load:.1f}")
    print("| method | CPU p50 ms | CPU p99 ms |\n|---|---:|---:|")
    for label, (p50, p99) in rows.items():
        print(f"| {label} | {p50:.3f} | {p99:.3f} |")


if __name__ == "__main__":
    main()
