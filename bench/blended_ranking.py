"""Ranking speed of the blended distance (audio L1 + w x artist-profile L1,
docs/similarity.md) at 1M songs, against today's audio-only index in the same run.

    uv run python bench/blended_ranking.py                          # 1M, marginals, both
    uv run python bench/blended_ranking.py --songs 100000 --queries 100

For each artist assignment of bench/catalogs.py (``random``: ~300 unrelated songs per
artist at 1M, flat profiles; ``coherent``: an artist's songs near each other, as in real
data), one catalog, one model, the artist profiles as the batch layer computes them, and:

- ``audio index``: the index without profiles (today's service), default rules;
- ``blended, w=0``: the blended index, a request with ``similarity.artist_weight = 0``;
- ``blended, w=4``: the blended index at the model's default weight.

Queries are catalog songs as seeds (``rank`` with the default rules, k=30: the code path
the API calls). CPU time per query (``process_time``) p50/p99 and wall; each row checks a
subset of queries for equality with the rule-aware brute force. Results go to
bench/results/ranking_speed_blended.json with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from catalogs import ARTIST_MODES, SHAPES, fit_model, k_for, synthetic_catalog
from ranking_reference import brute_force

from emergify_recommender import nearest
from emergify_recommender.artist_vectors import Similarity
from emergify_recommender.build import build_index
from emergify_recommender.index import SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import query_vector, rank

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
K = 30
DEFAULT = Similarity(4.0, "weighted")


def timed(index: SongIndex, seeds: list[int], weight: float | None) -> tuple[np.ndarray, ...]:
    wall, cpu = [], []
    for s in seeds:
        q = query_vector(index, [s])
        c, t = time.process_time(), time.perf_counter()
        rank(index, q, None, K, seeds=[s], artist_weight=weight)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return np.array(wall) * 1e3, np.array(cpu) * 1e3


def exact_on(index: SongIndex, seeds: list[int], weight: float | None) -> int:
    same = 0
    for s in seeds:
        q = query_vector(index, [s])
        got = rank(index, q, None, K, seeds=[s], artist_weight=weight)
        want = brute_force(index, q, K, seeds=[s], artist_weight=weight)
        same += [(r.row, r.distance) for r in got] == [(r.row, r.distance) for r in want]
    return same


def run(n: int, shape: str, artists: str, n_queries: int, n_checks: int) -> list[dict]:
    print(f"-- {n:,} songs, {shape}, artists {artists}", flush=True)
    cat = synthetic_catalog(n, shape=shape)
    cat.artists = artists
    portable = fit_model(cat.features, k_for(n))
    model = LoadedModel.from_portable(portable)
    profiles = cat.profiles(portable)
    t = time.perf_counter()
    audio = build_index(cat.records(), model)
    audio_s = time.perf_counter() - t
    t = time.perf_counter()
    blended = build_index(cat.records(), model, profiles=profiles, similarity=DEFAULT)
    blended_s = time.perf_counter() - t
    del cat
    table = blended.artist_table
    assert table is not None
    rng = np.random.default_rng(11)
    seeds = rng.choice(n, size=min(n, n_queries), replace=False).tolist()
    nearest.warm()
    rows = []
    for label, index, weight in (
        ("audio index (today)", audio, None),
        ("blended index, artist_weight=0", blended, 0.0),
        ("blended index, artist_weight=4 (default)", blended, None),
    ):
        rank(
            index, query_vector(index, [seeds[0]]), None, K, seeds=[seeds[0]], artist_weight=weight
        )
        wall, cpu = timed(index, seeds, weight)
        same = exact_on(index, seeds[:n_checks], weight)
        row = {
            "songs": n,
            "shape": shape,
            "artists": artists,
            "method": label,
            "cpu_p50_ms": float(np.percentile(cpu, 50)),
            "cpu_p99_ms": float(np.percentile(cpu, 99)),
            "p50_ms": float(np.percentile(wall, 50)),
            "p99_ms": float(np.percentile(wall, 99)),
            "queries": len(seeds),
            "equal_to_brute_force": f"{same}/{min(n_checks, len(seeds))}",
            "load_average": os.getloadavg()[0],
            "index_build_s": audio_s if index is audio else blended_s,
            "index_mb": index.nbytes / 2**20,
            "cells": index.cells.n_cells,
            "profile_rows": len(table.profiles.keys),
            "combinations": len(table),
        }
        rows.append(row)
        print(
            f"   {label:<44} cpu p50 {row['cpu_p50_ms']:6.3f} p99 {row['cpu_p99_ms']:6.3f} ms "
            f"(wall {row['p50_ms']:6.3f} / {row['p99_ms']:6.3f})  "
            f"exact {row['equal_to_brute_force']}  index {row['index_mb']:.0f} MB  "
            f"load {row['load_average']:.1f}",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--shape", default="marginals", choices=SHAPES)
    parser.add_argument("--artists", nargs="*", default=list(ARTIST_MODES), choices=ARTIST_MODES)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--checks", type=int, default=10)
    parser.add_argument("--out", default="ranking_speed_blended.json")
    args = parser.parse_args()
    rows = []
    for artists in args.artists:
        rows += run(args.songs, args.shape, artists, args.queries, args.checks)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"written {RESULTS / args.out}")


if __name__ == "__main__":
    main()
