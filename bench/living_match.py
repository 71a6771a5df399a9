"""Living-playlist matching cost: S subscriptions x one micro-batch of M new songs.

Shaped like real use: vectors are the 4,470 real songs' standardized audio features beside
their artists' sound profiles (18 dimensions); every subscription has 1-5 seeds drawn from the
catalog, its bound is the distance of its ``size``-th nearest catalog song (so the radii are
the real ones: wide in a small catalog), and a micro-batch is real songs plus noise. Compared in
the same run with the NumPy alternative (a float32 broadcast over blocks of seeds).

    uv run python bench/living_match.py [--subscriptions 10000 --batch 500 --runs 20]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from emergify_recommender.living_match import (
    NO_THRESHOLD,
    Subscriptions,
    entering,
    warm_up,
    weighted,
)

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "every_fresh_find.csv"
RESULTS = ROOT / "bench" / "results" / "living_match.json"
COLUMNS = (
    "Danceability",
    "Energy",
    "Loudness",
    "Speechiness",
    "Acousticness",
    "Instrumentalness",
    "Liveness",
    "Valence",
    "Tempo",
)


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """(songs x 18 vectors: standardized audio | mean of the artists' profiles, popularity)."""
    with SAMPLE.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    audio = np.array([[float(r[c]) for c in COLUMNS] for r in rows])
    audio = (audio - audio.mean(axis=0)) / audio.std(axis=0)
    artists = [[a.strip() for a in r["Artist Name(s)"].split(",") if a.strip()] for r in rows]
    members: dict[str, list[int]] = defaultdict(list)
    for i, names in enumerate(artists):
        for name in names:
            members[name].append(i)
    profile = {name: audio[idx].mean(axis=0) for name, idx in members.items()}
    profiles = np.array([np.mean([profile[n] for n in names], axis=0) for names in artists])
    popularity = np.array([int(r["Popularity"]) for r in rows], np.int16)
    return np.hstack([audio, profiles]), popularity


def build(catalog: np.ndarray, count: int, size: int, rng: np.random.Generator) -> Subscriptions:
    per = rng.integers(1, 6, count)
    offsets = np.concatenate(([0], np.cumsum(per))).astype(np.int64)
    seeds = catalog[rng.integers(0, len(catalog), offsets[-1])]
    weights = rng.uniform(0.3, 1.0, offsets[-1]).astype(np.float32)
    worst = np.empty(count, np.float32)
    for start in range(0, count, 256):  # the size-th nearest catalog song of each
        stop = min(count, start + 256)
        lo, hi = offsets[start], offsets[stop]
        d = np.abs(seeds[lo:hi, None, :] - catalog[None, :, :]).sum(-1) / weights[lo:hi, None]
        owner = np.repeat(np.arange(stop - start), per[start:stop])
        nearest = np.full((stop - start, len(catalog)), np.inf, np.float32)
        np.minimum.at(nearest, owner, d)
        worst[start:stop] = np.partition(nearest, size, axis=1)[:, size]
    thresholds = np.where(rng.random(count) < 0.5, NO_THRESHOLD, rng.integers(5, 60, count))
    return Subscriptions(seeds, weights, offsets, worst, thresholds.astype(np.int16))


def numpy_entering(subs: Subscriptions, songs: np.ndarray, popularity: np.ndarray) -> int:
    """The same test with NumPy broadcasting over blocks of seeds (the alternative)."""
    owner = np.repeat(np.arange(len(subs)), np.diff(subs.seed_offsets))
    total = 0
    block = 2048
    best = np.full((len(subs), len(songs)), np.inf, np.float32)
    for lo in range(0, len(owner), block):
        hi = min(len(owner), lo + block)
        d = np.abs(subs.seed_vectors[lo:hi, None, :] - songs[None, :, :]).sum(-1)
        d /= subs.seed_weights[lo:hi, None]
        np.minimum.at(best, owner[lo:hi], d)
    allowed = (popularity[None, :] == -1) | (popularity[None, :] <= subs.max_popularity[:, None])
    total = int(((best < subs.worst[:, None]) & allowed).sum())
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(11)
    vectors, popularity = real_vectors()
    catalog = weighted(vectors, np.ones(vectors.shape[1]))
    subs = build(catalog, args.subscriptions, args.size, rng)
    warm_up()
    timings: list[float] = []
    cpu_timings: list[float] = []  # CPU time: what the code costs when the machine is shared
    entries: list[int] = []
    for _ in range(args.runs):
        rows = rng.integers(0, len(catalog), args.batch)
        batch = (catalog[rows] + rng.normal(0, 0.3, (args.batch, catalog.shape[1]))).astype(
            np.float32
        )
        start, cpu = time.perf_counter(), time.process_time()
        got = entering(subs, batch, popularity[rows])
        timings.append((time.perf_counter() - start) * 1e3)
        cpu_timings.append((time.process_time() - cpu) * 1e3)
        entries.append(len(got))
    start = time.perf_counter()
    reference = numpy_entering(subs, batch, popularity[rows])
    numpy_ms = (time.perf_counter() - start) * 1e3
    if reference != entries[-1]:
        raise SystemExit(f"numba found {entries[-1]} entries, numpy {reference}")
    result = {
        "subscriptions": args.subscriptions,
        "seeds": int(subs.seed_offsets[-1]),
        "batch": args.batch,
        "dimensions": int(catalog.shape[1]),
        "runs": args.runs,
        "p50_ms": float(np.percentile(timings, 50)),
        "p95_ms": float(np.percentile(timings, 95)),
        "cpu_p50_ms": float(np.percentile(cpu_timings, 50)),
        "cpu_p95_ms": float(np.percentile(cpu_timings, 95)),
        "numpy_ms": numpy_ms,
        "entries_per_batch_p50": float(np.median(entries)),
        "load_average": os.getloadavg()[0],
    }
    print(
        f"{args.subscriptions:,} subscriptions ({result['seeds']:,} seeds) x {args.batch} songs, "
        f"{result['dimensions']} dims: numba p50 {result['p50_ms']:.1f} ms, "
        f"p95 {result['p95_ms']:.1f} ms (CPU p50 {result['cpu_p50_ms']:.1f} ms); "
        f"numpy {numpy_ms:.0f} ms; "
        f"{result['entries_per_batch_p50']:.0f} entries per batch; "
        f"load {result['load_average']:.1f}"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
