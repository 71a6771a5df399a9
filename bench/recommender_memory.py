"""RSS of a recommender process holding a catalog of 1M songs.

    uv run python bench/recommender_memory.py            # 1,000,000 songs
    uv run python bench/recommender_memory.py --quick    # 100,000 songs

A fresh subprocess imports the recommender app (``create_app``: FastAPI, SQLAlchemy,
aiokafka, NumPy ... everything the service loads), reads VmRSS from /proc/self/status,
then builds the real ``SongIndex`` from a streamed synthetic catalog (bench/catalogs.py,
generated and modelled by the parent and handed over as arrays + model JSON, so the child
never imports scikit-learn; records arrive in chunks as from the feature table), drops
everything else, and reads VmRSS again. Reported: RSS before, after (total) and the
delta, the peak (VmHWM, which includes the transient build), and the index's own column
bytes. The catalog arrays are freed before the final reading.
Results also go to bench/results/recommender_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
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
nearest.warm()  # as the service does at start-up
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
profiles = similarity = None
if "profile_sums" in saved:  # what the service reads from artist_profiles
    from emergify_contracts.artist_profiles import ArtistProfiles
    from emergify_recommender.artist_vectors import Similarity
    cat.artists = sys.argv[5]
    cat._near = saved["near"] if "near" in saved else None
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
    "combinations": len(index.artist_table) if index.artist_table is not None else 0,
}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description="RSS of the recommender holding 1M songs")
    parser.add_argument("--quick", action="store_true", help="100k songs instead of 1M")
    parser.add_argument("--songs", type=int, default=None)
    parser.add_argument("--shape", default="bootstrap5", help="catalog shape (bench/catalogs.py)")
    parser.add_argument(
        "--artists",
        default="random",
        choices=("none", "random", "coherent"),
        help="artist profiles held (the service's default): songs' artists drawn at random "
        "or coherent (bench/catalogs.py); none: the audio-only index",
    )
    parser.add_argument("--out", default="recommender_memory.json")
    args = parser.parse_args()
    n = args.songs or (100_000 if args.quick else 1_000_000)
    sys.path.insert(0, str(HERE))
    from catalogs import fit_model, k_for, synthetic_catalog

    # The catalog and model are made here, so the measured process never imports
    # scikit-learn (the recommender does not).
    cat = synthetic_catalog(n, shape=args.shape)
    model = fit_model(cat.features, k_for(n))
    extra: dict[str, np.ndarray] = {}
    if args.artists != "none":
        cat.artists = args.artists
        if args.artists == "coherent":
            extra["near"] = cat.nearest_real()
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
        out = subprocess.run(
            [
                sys.executable,
                "-c",
                CHILD,
                str(n),
                str(HERE),
                str(arrays),
                str(model_json),
                args.artists,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["target_mb"] = TARGET_MB
    result["shape"] = args.shape
    result["artists"] = args.artists
    print(
        "| songs | RSS before index (MB) | RSS holding index (MB) | delta (MB) | peak (MB) "
        "| index columns (MB) | build (s) | target (MB) |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {result['songs']:,} | {result['rss_before_mb']:.0f} | {result['rss_after_mb']:.0f} "
        f"| {result['rss_delta_mb']:.0f} | {result['peak_rss_mb']:.0f} "
        f"| {result['index_column_mb']:.0f} | {result['index_build_s']:.1f} | {TARGET_MB:.0f} |"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
