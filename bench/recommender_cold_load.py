"""The recommender's cold load: a full build from the feature table against a start from its
saved index (issue 14: cold load <= 60 s at 10M songs).

    uv run python bench/recommender_cold_load.py                      # 1,000,000 songs
    uv run python bench/recommender_cold_load.py --songs 200000 --database postgresql

A feature table of ``--songs`` synthetic songs (bench/catalogs.py, ``--shape``, artists
``coherent``) with a model and its artist profiles, as the batch layer stores them, is
written to a fresh SQLite file (or a fresh PostgreSQL database). Then, each in a fresh
subprocess that imports the service as it runs (so no run inherits another's memory):

1. ``full``: ``Catalog.reload("start")`` with no snapshot file: the full build, then the
   snapshot save (timed apart: it runs after the catalog is served);
2. ``snapshot``: the same start with the file just written: read back and caught up;
3. ``snapshot + 1%``: 1% more songs committed at a later table version first: read back,
   then those songs loaded as the poll loads them;
4. ``full after the 1%``: a full build of that table (the reference of 3's answers);
5. ``new model``: started from the snapshot, then model v2 (another fit, another artist
   weight) and its profiles are published and the poll applies them to the loaded songs
   (``Catalog._new_model``: remodeled, no full load); ``full, new model``: a full build
   under v2, whose answers (distances) must equal 5's.

Each reports wall and CPU seconds, peak RSS (VmHWM) and RSS after, and the child checks
that the three indexes hold the same ids and answer 20 queries identically. Results:
bench/results/recommender_cold_load.json (one entry per run, with the load average).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from catalogs import fit_model, k_for, synthetic_catalog  # noqa: E402

from emergify_contracts.song import AUDIO_FEATURES  # noqa: E402
from emergify_contracts.tables import (  # noqa: E402
    PROFILE_SUM_COLUMNS,
    artist_profiles,
    create_tables,
    make_engine,
    model_versions,
    songs,
)

CHILD = r"""
import asyncio, json, os, resource, sys, time
from pathlib import Path
import numpy as np

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0

from emergify_contracts.tables import make_engine
from emergify_recommender.catalog import Catalog
from emergify_recommender.ranking import query_vector, rank

url, snapshot, answers_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
catalog = Catalog(make_engine(url), snapshot_path=snapshot)

async def start():
    wall, cpu = time.perf_counter(), time.process_time()
    index = await catalog.reload("start")
    loaded = time.perf_counter() - wall, time.process_time() - cpu, status("VmHWM")
    # The service saves in a worker thread once the catalog is served: how long after.
    t = time.perf_counter()
    written = await catalog.snapshot_written()
    return index, loaded, (time.perf_counter() - t) if written else None

index, (load_wall, load_cpu, peak_load), save_wall = asyncio.run(start())
new_model = None
if len(sys.argv) > 4 and sys.argv[4] != "-":
    # A retrain publishes model v2 (and its profiles) while the service runs: the poll
    # applies it to the loaded songs (Catalog._new_model) instead of a full load.
    import sqlalchemy as sa
    from emergify_contracts.tables import artist_profiles, model_versions
    from datetime import datetime
    published = json.loads(Path(sys.argv[4]).read_text())
    published["model"]["trained_at"] = datetime.fromisoformat(published["model"]["trained_at"])
    for row in published["profiles"]:
        row["updated_at"] = datetime.fromisoformat(row["updated_at"])
    with catalog.engine.begin() as conn:
        conn.execute(model_versions.insert().values(**published["model"]))
        conn.execute(artist_profiles.insert(), published["profiles"])
    wall, cpu = time.perf_counter(), time.process_time()
    index = asyncio.run(catalog.sync())
    new_model = {
        "model_version": index.model_version,
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb": round(status("VmHWM"), 1),
    }
distances_only = len(sys.argv) > 5
rng = np.random.default_rng(3)
seeds = [int(r) for r in rng.choice(len(index), 20, replace=False)]
ids = [index.track_id(r) for r in seeds] if not answers_path.exists() else json.loads(
    answers_path.read_text())["seeds"]
rows = [index.position(t) for t in ids]
found = []
for row in rows:
    ranked = rank(index, query_vector(index, [row]), limit=30, exclude=[row], seeds=[row])
    found.append(
        [round(f.distance, 9) for f in ranked]
        if distances_only  # rows may differ in order between equal indexes: ties move
        else [[index.track_id(f.row), round(f.distance, 9)] for f in ranked]
    )
same = None
if answers_path.exists():
    same = json.loads(answers_path.read_text())["answers"] == found
else:
    answers_path.write_text(json.dumps({"seeds": ids, "answers": found}))
print(json.dumps({
    "started_from": catalog.started_from,
    "songs": len(index),
    "load_wall_s": round(load_wall, 2),
    "load_cpu_s": round(load_cpu, 2),
    "snapshot_save_s": None if save_wall is None else round(save_wall, 2),
    "snapshot_mib": round(snapshot.stat().st_size / 2**20, 1) if snapshot.exists() else None,
    "peak_rss_during_load_mb": round(peak_load, 1),
    "rss_after_mb": round(status("VmRSS"), 1),
    "answers_equal_full_build": same,
    "new_model": new_model,
}))
"""


def load() -> float:
    return round(os.getloadavg()[0], 2)


def _model_row(model: Any, version: int, weight: float) -> dict[str, Any]:
    return {
        "version": version,
        "trained_at": model.trained_at,
        "k": model.k,
        "silhouette": model.silhouette,
        "songs": model.songs,
        "metrics": {"similarity": {"artist_weight": weight, "multi_artist_rule": "weighted"}},
        "artifact": model.model_dump(mode="json"),
    }


def _profile_rows(
    profiles: Any, version: int, now: datetime, table_version: int = 2
) -> list[dict[str, Any]]:
    return [
        {
            "model_version": version,
            "artist_key": key,
            "name": key,
            "song_count": int(profiles.counts[i]),
            "genres": [],
            "table_version": table_version,
            "updated_at": now,
            **dict(zip(PROFILE_SUM_COLUMNS, profiles.sums[i].tolist(), strict=True)),
        }
        for i, key in enumerate(profiles.keys)
    ]


def write_table(
    url: str, songs_n: int, shape: str, model_v2: Path
) -> tuple[int, list[dict[str, Any]]]:
    """The feature table, model v1 (stored with its similarity) and its artist profiles;
    model v2 (another fit, other weight) and its profiles as JSON at ``model_v2`` for the
    new-model run. Returns the model's k and the rows held back for the catch-up run (1%)."""
    cat = synthetic_catalog(songs_n, shape=shape)
    cat.artists = "coherent"
    k = k_for(songs_n)
    model = fit_model(cat.features, k)
    profiles = cat.profiles(model)
    v2 = fit_model(cat.features[::3], k + 2, version=2, seed=11)
    now = datetime.now(UTC)
    model_v2.write_text(
        json.dumps(
            {
                "model": _model_row(v2, 2, 3.0),
                "profiles": _profile_rows(cat.profiles(v2), 2, now),
            },
            default=str,
        )
    )
    engine = make_engine(url)
    create_tables(engine)
    held_back = max(1, songs_n // 100)
    first, later = [], []
    for i, r in enumerate(cat.records()):
        row = {
            "track_id": r.track_id,
            "name": r.name,
            "artists": list(r.artists),
            "artist_ids": list(r.artist_ids or ()),
            "genres": [],
            "album": r.album,
            "popularity": r.popularity,
            **dict(zip(AUDIO_FEATURES, r.features, strict=True)),
            "ingested_at": now,
            "updated_at": now,
            "table_version": 1,
        }
        (later if i >= songs_n - held_back else first).append(row)
    with engine.begin() as conn:
        for start in range(0, len(first), 50_000):
            conn.execute(songs.insert(), first[start : start + 50_000])
        conn.execute(model_versions.insert().values(**_model_row(model, 1, 4.0)))
        conn.execute(artist_profiles.insert(), _profile_rows(profiles, 1, now, table_version=1))
    engine.dispose()
    for row in later:
        row["table_version"] = 2
    return k, later


def child(
    url: str, snapshot: Path, answers: Path, new_model: Path | None = None, distances: bool = False
) -> dict[str, Any]:
    env = dict(os.environ)
    env.setdefault("EMERGIFY_INTERNAL_TOKEN", "bench-only-" + os.urandom(8).hex())
    before = load()
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            url,
            str(snapshot),
            str(answers),
            str(new_model or "-"),
            *(["distances"] if distances else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["load_1m"] = [before, load()]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=1_000_000)
    parser.add_argument("--shape", default="marginals")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="emergify-coldload-"))
    pg_name = None
    if args.database == "postgresql":
        from testkit import drop_pg_database, new_pg_database

        pg_name, url = new_pg_database("emergify_coldload")
    else:
        url = f"sqlite:///{work / 'emergify.db'}"
    entry: dict[str, Any] = {
        "songs": args.songs,
        "shape": args.shape,
        "database": args.database,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": {},
    }
    try:
        t = time.perf_counter()
        model_v2 = work / "model_v2.json"
        k, later = write_table(url, args.songs, args.shape, model_v2)
        entry["k"] = k
        print(f"feature table of {args.songs:,} songs written in {time.perf_counter() - t:.1f} s")
        snapshot, answers = work / "index.snapshot", work / "answers.json"
        entry["runs"]["full"] = child(url, snapshot, answers)
        print("full build:", entry["runs"]["full"], flush=True)
        # The same table, but every song already held back: answers compare like for like.
        entry["runs"]["snapshot"] = child(url, snapshot, answers)
        print("snapshot:", entry["runs"]["snapshot"], flush=True)
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(songs.insert(), later)
        engine.dispose()
        answers.unlink()  # the catalog changed: the next run records its own answers
        entry["runs"]["snapshot + 1%"] = child(url, snapshot, answers)
        print("snapshot + 1%:", entry["runs"]["snapshot + 1%"], flush=True)
        entry["runs"]["full after the 1%"] = child(url, work / "none.snapshot", answers)
        print("full after the 1%:", entry["runs"]["full after the 1%"], flush=True)
        # A retrain publishes model v2: applied to the loaded songs, against a full build.
        answers_v2 = work / "answers_v2.json"
        runs = entry["runs"]
        runs["new model"] = child(url, snapshot, answers_v2, model_v2, distances=True)
        print("new model (remodel):", runs["new model"]["new_model"], flush=True)
        runs["full, new model"] = child(url, work / "v2.snapshot", answers_v2, distances=True)
        print("full build under the new model:", runs["full, new model"], flush=True)
    finally:
        if pg_name:
            drop_pg_database(pg_name)
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    runs = entry["runs"]
    ok = all(
        runs[name]["answers_equal_full_build"]
        for name in ("snapshot", "full after the 1%", "full, new model")
    )
    entry["answers_equal"] = bool(ok)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "recommender_cold_load.json"
    history = json.loads(out.read_text()) if out.exists() else []
    history.append(entry)
    out.write_text(json.dumps(history, indent=2))
    print(f"\n{'start':<22} {'wall s':>8} {'CPU s':>8} {'peak MB':>9} {'RSS MB':>8}")
    for name, r in runs.items():
        print(
            f"{name:<22} {r['load_wall_s']:>8} {r['load_cpu_s']:>8} "
            f"{r['peak_rss_during_load_mb']:>9} {r['rss_after_mb']:>8}  ({r['started_from']})"
        )
    full = runs["full"]
    print(f"snapshot: {full['snapshot_mib']} MiB, saved {full['snapshot_save_s']} s after the load")
    remodel = runs["new model"]["new_model"]
    print(
        f"new model applied to the loaded songs: {remodel['wall_s']} s wall, "
        f"{remodel['cpu_s']} s CPU (a full build under it: "
        f"{runs['full, new model']['load_wall_s']} s wall, "
        f"{runs['full, new model']['load_cpu_s']} s CPU)"
    )
    print(f"answers equal to a full build's: {ok}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
