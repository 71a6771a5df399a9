"""Living-playlist matching cost: S subscriptions x one micro-batch of M new songs.

Shaped like real use: vectors are the 4,470 real songs' standardized audio features beside
their artists' sound profiles (18 dimensions); every subscription has 1-5 seeds drawn from the
catalog, its bound is the distance of its ``size``-th nearest catalog song (so the radii are
the real ones: wide in a small catalog), and a micro-batch is real songs plus noise. Compared in
the same run with the NumPy alternative (a float32 broadcast over blocks of seeds).

``--end-to-end`` measures what the recommender does per catalog change on top of the kernel
(:class:`emergify_recommender.living.LivingPlaylists`): a real database (SQLite in a temporary
folder, or ``--database-url``) holding the 4,470 real songs, a model, S living playlists of
``size`` items each (their real nearest songs) owned by S/2 listeners with dislikes and bans,
then micro-batches of M new songs (real songs plus 30% noise, new ids) written, applied to the
catalog, and matched: the kernel alone (the index's 9 weighted dimensions), and the whole
``apply_catalog_change`` (marker row, catch-up read, kernel, listener rules, merge, and the
write of every changed playlist in one transaction).

    uv run python bench/living_match.py [--subscriptions 10000 --batch 500 --runs 20]
    uv run python bench/living_match.py --end-to-end [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
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
RESULTS_E2E = ROOT / "bench" / "results" / "living_match_end_to_end.json"
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


def end_to_end(args: argparse.Namespace) -> None:
    """Kernel and whole catalog-change cost of the recommender's living playlists."""
    sys.path.insert(0, str(ROOT / "bench"))
    sys.path.insert(0, str(ROOT / "tests"))
    import sqlalchemy as sa
    from catalog_fixtures import insert_model, song_row
    from catalogs import fit_model, k_for, real_songs

    from emergify_contracts.events import CatalogChange
    from emergify_contracts.listener import (
        listener_feedback,
        living_playlist_items,
        living_playlists,
    )
    from emergify_contracts.song import AUDIO_FEATURES
    from emergify_contracts.tables import create_tables, make_engine, songs
    from emergify_recommender.catalog import Catalog
    from emergify_recommender.config import Settings
    from emergify_recommender.living import LivingPlaylists

    rng = np.random.default_rng(13)
    tmp = tempfile.TemporaryDirectory()
    url = args.database_url or f"sqlite:///{tmp.name}/living.db"
    engine = make_engine(url)
    create_tables(engine)
    real = real_songs()
    features = np.array([[getattr(s, f) for f in AUDIO_FEATURES] for s in real])
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(songs.insert(), [song_row(s, 1) for s in real])
    insert_model(engine, fit_model(features, k_for(len(real))))
    catalog = Catalog(engine)
    index = asyncio.run(catalog.reload("bench"))

    # Subscriptions: 1-5 real seeds each, items = their real `size` nearest songs that pass
    # their popularity rule (what creating one writes).
    count, size = args.subscriptions, args.size
    z = index.z_of(np.arange(len(index))) * index.weights
    pop = index.popularity.astype(np.int64)
    per = rng.integers(1, 6, count)
    listeners = [f"bench:{i // 2}" for i in range(count)]
    headers, items = [], []
    for s in range(count):
        seed_rows = rng.choice(len(index), per[s], replace=False)
        weights = rng.uniform(0.3, 1.0, per[s])
        cap = None if rng.random() < 0.5 else int(rng.integers(20, 60))
        d = (np.abs(z[seed_rows][:, None, :] - z[None, :, :]).sum(-1) / weights[:, None]).min(0)
        d[seed_rows] = np.inf
        if cap is not None:
            d[(pop > cap)] = np.inf
        nearest = np.argpartition(d, size)[:size]
        playlist_id = str(uuid.uuid4())
        headers.append(
            {
                "playlist_id": playlist_id,
                "listener_id": listeners[s],
                "name": f"bench {s}",
                "size": size,
                "max_popularity": cap,
                "max_per_artist": size,  # the initial items ignore the artist cap
                "seeds": [
                    {"track_id": index.track_id(int(r)), "weight": float(w), "why": "bench"}
                    for r, w in zip(seed_rows, weights, strict=True)
                ],
                "taste": False,
                "version": 1,
                "synced_version": 1,
                "songs_added": 0,
                "created_at": now,
            }
        )
        items.extend(
            {
                "playlist_id": playlist_id,
                "track_id": index.track_id(int(r)),
                "distance": float(d[r]),
                "added_at": now,
            }
            for r in nearest
        )
    feedback = [
        {
            "listener_id": listener,
            "event_id": uuid.uuid4().hex,
            "track_id": index.track_id(int(r)),
            "signal": signal,
            "at": now,
            "table_version": 1,
        }
        for listener in sorted(set(listeners))
        for signal, n in (("dislike", 10), ("ban_artist", 2))
        for r in rng.choice(len(index), n, replace=False)
    ]
    with engine.begin() as conn:
        conn.execute(living_playlists.insert(), headers)
        for lo in range(0, len(items), 20_000):
            conn.execute(living_playlist_items.insert(), items[lo : lo + 20_000])
        conn.execute(listener_feedback.insert(), feedback)
    settings = Settings(_env_file=None, database_url=url)  # type: ignore[call-arg]
    living = LivingPlaylists(settings, engine)
    start = time.perf_counter()
    living.reload()
    reload_ms = (time.perf_counter() - start) * 1e3
    warm_up()

    scale = features.std(axis=0)
    unit = [f not in ("loudness", "tempo") for f in AUDIO_FEATURES]
    kernel_ms, kernel_cpu, e2e_ms, e2e_cpu, pairs, written, loads = [], [], [], [], [], [], []
    rebuild_ms: list[float] = []
    total = len(real)
    for run in range(args.runs):
        version = run + 2
        base = rng.integers(0, len(real), args.batch)
        noisy = features[base] + rng.normal(0, 0.3, (args.batch, len(scale))) * scale
        noisy[:, unit] = np.clip(noisy[:, unit], 0, 1)
        noisy[:, AUDIO_FEATURES.index("tempo")] = np.clip(
            noisy[:, AUDIO_FEATURES.index("tempo")], 30, 250
        )
        noisy[:, AUDIO_FEATURES.index("loudness")] = np.clip(
            noisy[:, AUDIO_FEATURES.index("loudness")], -60, 0
        )
        batch = []
        for i, (b, vector) in enumerate(zip(base, noisy.round(6), strict=True)):
            song = real[b].model_copy(
                update={
                    "track_id": f"Bench{version:05d}{i:012d}",
                    "name": f"{real[b].name} (take {version})",
                    **{f: float(v) for f, v in zip(AUDIO_FEATURES, vector, strict=True)},
                }
            )
            batch.append(song_row(song, version))
        with engine.begin() as conn:
            conn.execute(songs.insert(), batch)
        total += len(batch)
        change = CatalogChange(
            table_version=version, upserted_ids=[r["track_id"] for r in batch], songs=total
        )
        index = asyncio.run(catalog.apply_change(change))
        start = time.perf_counter()
        living.matcher(index)  # compiled subscriptions: rebuilt after the previous write
        rebuild_ms.append((time.perf_counter() - start) * 1e3)
        start, cpu = time.perf_counter(), time.process_time()
        living.match(index, change.upserted_ids)
        kernel_ms.append((time.perf_counter() - start) * 1e3)
        kernel_cpu.append((time.process_time() - cpu) * 1e3)
        start, cpu = time.perf_counter(), time.process_time()
        result = living.apply_catalog_change(change, index)
        e2e_ms.append((time.perf_counter() - start) * 1e3)
        e2e_cpu.append((time.process_time() - cpu) * 1e3)
        pairs.append(result.pairs)
        written.append(len(result.changes))
        loads.append(os.getloadavg()[0])
    with engine.connect() as conn:
        added = conn.execute(sa.select(sa.func.sum(living_playlists.c.songs_added))).scalar()

    def pct(values: list[float], q: float) -> float:
        return float(np.percentile(values, q))

    result_doc = {
        "database": engine.dialect.name,
        "subscriptions": count,
        "listeners": len(set(listeners)),
        "seeds": int(per.sum()),
        "size": size,
        "batch": args.batch,
        "dimensions": int(z.shape[1]),
        "runs": args.runs,
        "reload_ms": reload_ms,
        "matcher_rebuild_p50_ms": pct(rebuild_ms, 50),
        "kernel_p50_ms": pct(kernel_ms, 50),
        "kernel_p95_ms": pct(kernel_ms, 95),
        "kernel_cpu_p50_ms": pct(kernel_cpu, 50),
        "end_to_end_p50_ms": pct(e2e_ms, 50),
        "end_to_end_p95_ms": pct(e2e_ms, 95),
        "end_to_end_cpu_p50_ms": pct(e2e_cpu, 50),
        "entering_pairs_p50": float(np.median(pairs)),
        "playlists_written_p50": float(np.median(written)),
        "songs_added_total": int(added or 0),
        "load_average": float(np.mean(loads)),
    }
    print(
        f"{engine.dialect.name}: {count:,} subscriptions ({result_doc['seeds']:,} seeds, "
        f"{result_doc['listeners']:,} listeners) x {args.batch} new songs, "
        f"{result_doc['dimensions']} dims: kernel p50 {result_doc['kernel_p50_ms']:.1f} ms "
        f"(CPU {result_doc['kernel_cpu_p50_ms']:.1f} ms); end to end p50 "
        f"{result_doc['end_to_end_p50_ms']:.0f} ms, p95 {result_doc['end_to_end_p95_ms']:.0f} ms "
        f"(CPU p50 {result_doc['end_to_end_cpu_p50_ms']:.0f} ms); "
        f"{result_doc['entering_pairs_p50']:.0f} entering pairs, "
        f"{result_doc['playlists_written_p50']:.0f} playlists written per batch; "
        f"load {result_doc['load_average']:.1f}"
    )
    RESULTS_E2E.parent.mkdir(parents=True, exist_ok=True)
    out = json.loads(RESULTS_E2E.read_text()) if RESULTS_E2E.exists() else {}
    out[engine.dialect.name] = result_doc
    RESULTS_E2E.write_text(json.dumps(out, indent=2) + "\n")
    engine.dispose()
    tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--size", type=int, default=20)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    if args.end_to_end:
        end_to_end(args)
        return
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
