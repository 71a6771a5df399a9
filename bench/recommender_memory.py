"""RSS of a recommender process holding a catalog of 1M songs.

    uv run python bench/recommender_memory.py                     # 1,000,000 songs, blended
    uv run python bench/recommender_memory.py --artists none      # the audio-only index
    uv run python bench/recommender_memory.py --quick             # 100,000 songs

A fresh subprocess imports the recommender app (``create_app``: FastAPI, SQLAlchemy,
aiokafka, NumPy ... everything the service loads), warms the ranking kernel, reads VmRSS
from /proc/self/status, then builds the real ``SongIndex`` from a streamed synthetic
catalog (bench/catalogs.py, generated and modelled by the parent and handed over as
arrays + model JSON, so the child never imports scikit-learn; records arrive in chunks as
from the feature table), drops everything else, and reads VmRSS again.

``--artists`` (default ``coherent``): the index the service holds for a model with artist
profiles, built as ``Catalog._full_load`` builds it (``build_index(..., profiles=...,
similarity=Similarity(4.0, "weighted"))``), the profiles computed by the parent as the
batch layer computes them and handed over as plain arrays (keys, sums, counts);
``random``: the same with songs' artists drawn at random (flat profiles); ``none``: the
audio-only index (a model without profiles) over songs credited as ``--credits`` says
(``random`` by default, the catalog of the earlier figures; ``coherent`` gives the audio-only
index over the very catalog of ``--artists coherent``).

Reported: RSS before, after (total) and the delta, the peak (VmHWM, which includes the
transient build), the index's own column bytes (the artist table included), the artist
table's bytes (``ArtistVectors.nbytes``) and its combination count, and the 1-minute load
average before and after. The catalog arrays are freed before the final reading.
Results are appended to bench/results/recommender_memory.json, one entry per run (with
its shape, artists mode, date and load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from catalogs import ARTIST_MODES, SHAPES  # noqa: E402

RESULTS = HERE / "results"
TARGET_MB = 300.0

CHILD = r"""
import gc, json, sys, time
sys.path.insert(0, sys.argv[2])

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    raise KeyError(field)

import os, secrets
# The app refuses to start without the internal credential; a throwaway one for this process.
os.environ.setdefault("EMERGIFY_INTERNAL_TOKEN", secrets.token_urlsafe(32))
from emergify_recommender.main import create_app
import emergify_recommender.api.main  # noqa: F401  (every route module)
from emergify_recommender import nearest
nearest.warm()  # numba imported and the kernels compiled, as in a serving process
create_app()
gc.collect()
before = status("VmRSS")
import numpy as np
from catalogs import Catalog, real_songs
from emergify_contracts.model import PortableModel
from emergify_recommender.build import build_index
from emergify_recommender.model import LoadedModel
saved = np.load(sys.argv[3])
cat = Catalog(
    features=saved["features"], ids=saved["ids"], base=saved["base"],
    popularity=saved["popularity"], real=real_songs(),
)
model = LoadedModel.from_portable(PortableModel.model_validate_json(open(sys.argv[4]).read()))
cat.artists = sys.argv[5]  # how songs are credited (random or coherent)
cat._near = saved["near"] if "near" in saved else None
profiles = similarity = None
if "profile_sums" in saved:  # what the service reads from artist_profiles
    from emergify_contracts.artist_profiles import ArtistProfiles
    from emergify_recommender.artist_vectors import Similarity
    profiles = ArtistProfiles(
        tuple(saved["profile_keys"].tolist()), saved["profile_sums"], saved["profile_counts"]
    )
    similarity = Similarity(4.0, "weighted")
n = len(cat)
started = time.perf_counter()
index = build_index(cat.records(), model, profiles=profiles, similarity=similarity)
del profiles
build_s = time.perf_counter() - started
del cat
gc.collect()
# As the service does after every full load (Catalog._full_load): glibc keeps freed heap
# pages mapped otherwise.
from emergify_recommender.catalog import release_freed_memory
release_freed_memory()
after = status("VmRSS")
print(json.dumps({
    "songs": len(index),
    "rss_before_mb": before,
    "rss_after_mb": after,
    "rss_delta_mb": after - before,
    "peak_rss_mb": status("VmHWM"),
    "index_column_mb": index.nbytes / 2**20,
    "index_build_s": build_s,
    "cells": index.cells.n_cells,
    "blended": index.blended,
    "artist_table_mb": (
        index.artist_table.nbytes / 2**20 if index.artist_table is not None else 0.0
    ),
    "combinations": len(index.artist_table) if index.artist_table is not None else 0,
    "artist_weight": index.artist_weight,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="RSS of the recommender holding 1M songs")
    parser.add_argument("--quick", action="store_true", help="100k songs instead of 1M")
    parser.add_argument("--songs", type=int, default=None)
    parser.add_argument(
        "--shape", default="bootstrap5", choices=SHAPES, help="catalog shape (bench/catalogs.py)"
    )
    parser.add_argument(
        "--artists",
        default="coherent",
        choices=("none", *ARTIST_MODES),
        help="the blended index with artist profiles (what the service holds for a model "
        "with profiles), songs' artists coherent or drawn at random (bench/catalogs.py); "
        "none: the audio-only index",
    )
    parser.add_argument(
        "--credits",
        default="random",
        choices=ARTIST_MODES,
        help="with --artists none: how the catalog's songs are credited (the blended modes "
        "credit as they are named), to compare both indexes over one catalog",
    )
    parser.add_argument("--out", default="recommender_memory.json")
    args = parser.parse_args()
    if args.artists != "none" and args.credits not in (parser.get_default("credits"), args.artists):
        parser.error("--credits goes with --artists none (a blended mode credits as named)")
    n = args.songs or (100_000 if args.quick else 1_000_000)
    from catalogs import fit_model, k_for, synthetic_catalog

    # The catalog and model are made here, so the measured process never imports
    # scikit-learn (the recommender does not).
    cat = synthetic_catalog(n, shape=args.shape)
    model = fit_model(cat.features, k_for(n))
    credits = args.artists if args.artists != "none" else args.credits
    cat.artists = credits
    extra: dict[str, np.ndarray] = {}
    if credits == "coherent":
        extra["near"] = cat.nearest_real()
    if args.artists != "none":
        profiles = cat.profiles(model)
        extra.update(
            profile_keys=np.array(profiles.keys),
            profile_sums=profiles.sums,
            profile_counts=profiles.counts,
        )
    with tempfile.TemporaryDirectory() as tmp:
        arrays, model_json = Path(tmp) / "catalog.npz", Path(tmp) / "model.json"
        np.savez(
            arrays,
            features=cat.features,
            ids=cat.ids,
            base=cat.base,
            popularity=cat.popularity,
            **extra,
        )
        model_json.write_text(model.model_dump_json())
        del cat, extra
        load_before = os.getloadavg()[0]
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(n),
                str(HERE),
                str(arrays),
                str(model_json),
                credits,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        load_after = os.getloadavg()[0]
    result = {
        "artists": args.artists,
        "credits": credits,
        "shape": args.shape,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **json.loads(out.stdout.strip().splitlines()[-1]),
        "target_mb": TARGET_MB,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(load_after, 2),
    }
    print(
        "| songs | shape | artists | RSS before index (MB) | RSS holding index (MB) "
        "| delta (MB) | peak (MB) | index columns (MB) | artist table (MB) | combinations "
        "| build (s) | load avg |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {result['songs']:,} | {args.shape} "
        f"| {args.artists if args.artists != 'none' else f'none ({credits} credits)'} "
        f"| {result['rss_before_mb']:.0f} | {result['rss_after_mb']:.0f} "
        f"| {result['rss_delta_mb']:.0f} | {result['peak_rss_mb']:.0f} "
        f"| {result['index_column_mb']:.0f} | {result['artist_table_mb']:.1f} "
        f"| {result['combinations']:,} | {result['index_build_s']:.1f} "
        f"| {load_before:.1f} → {load_after:.1f} |"
    )
    save(RESULTS / args.out, result)


def save(path: Path, result: dict) -> None:
    """Append ``result`` to the runs in ``path`` (every run is kept: the RSS delta varies
    from run to run by the allocator's slack, so repeats are worth comparing)."""
    runs: list[dict] = []
    if path.exists():
        old = json.loads(path.read_text())
        runs = old["runs"] if isinstance(old, dict) and "runs" in old else [old]
    runs.append(result)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps({"runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
