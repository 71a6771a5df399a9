"""Genre precision@10 of recommendations on the genre-labelled Spotify files.

    uv run python bench/quality.py            # every song of each file is a seed
    uv run python bench/quality.py --quick    # 500 seeds per file

For ``../shared/data/high_popularity_spotify_data.csv`` and ``low_popularity_...`` (each on
its own): a track may be listed under several playlists, so its genre labels are the union
of ``playlist_genre`` over its rows (one song per track id, features of its first row).
Every song is a seed; precision@10 is the share of its 10 recommendations that share at
least one genre label with it, averaged over seeds. Methods:

- **emergify**: the product's ranking, ``emergify_recommender.ranking.rank`` on a real
  ``SongIndex`` with a model (StandardScaler -> PCA -> KMeans) fitted on that file's
  features alone (no labels), default rules (max 2 songs per artist, no duplicates).
- **emergify, no artist cap**: the same search with the rules relaxed to duplicates only,
  to separate the effect of the distance from the effect of the playlist rules.
- **(a) raw Manhattan (original notebooks)**: Manhattan distance on the raw, unscaled
  columns danceability, energy, key, loudness, speechiness, acousticness,
  instrumentalness, liveness, valence, tempo (tempo and loudness dominate).
- **(b) exact scaled Manhattan**: brute-force L1 on the standardized nine features.
- **(c) random**: 10 other songs drawn uniformly (seeded).

Nothing is tuned on the labels: the model's k comes from the catalog size only.
Results also go to bench/results/quality.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catalogs import fit_model, k_for

from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.build import build_index
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import rank
from emergify_recommender.records import SongRecord

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = ["high_popularity_spotify_data.csv", "low_popularity_spotify_data.csv"]
RAW_COLUMNS = [
    "danceability",
    "energy",
    "key",
    "loudness",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
]
TOP = 10
RESULTS = Path(__file__).resolve().parent / "results"


def load(path: Path) -> tuple[list[dict], list[set[str]]]:
    """One row per track id (first occurrence) with the union of its genre labels."""
    songs: dict[str, dict] = {}
    genres: dict[str, set[str]] = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            track_id = (row.get("track_id") or row.get("id") or "").strip()
            genre = (row.get("playlist_genre") or "").strip().lower()
            try:
                values = {c: float(row[c]) for c in RAW_COLUMNS}
            except (TypeError, ValueError):
                continue
            if len(track_id) != 22 or not all(np.isfinite(list(values.values()))):
                continue
            if track_id not in songs:
                songs[track_id] = {
                    "track_id": track_id,
                    "name": row.get("track_name") or "",
                    "artists": [a.strip() for a in (row.get("track_artist") or "").split(",")]
                    or ["?"],
                    "popularity": int(float(row.get("track_popularity") or 0)),
                    **values,
                }
                genres[track_id] = set()
            if genre:
                genres[track_id].add(genre)
    ordered = list(songs.values())
    return ordered, [genres[s["track_id"]] for s in ordered]


def precision(lists: list[list[int]], seeds: list[int], labels: list[set[str]]) -> float:
    scores = []
    for seed, got in zip(seeds, lists, strict=True):
        if not got:
            continue
        scores.append(sum(bool(labels[r] & labels[seed]) for r in got[:TOP]) / TOP)
    return float(np.mean(scores))


def brute(x: np.ndarray, seed: int) -> list[int]:
    d = np.abs(x - x[seed]).sum(axis=1)
    d[seed] = np.inf
    part = np.argpartition(d, TOP)[:TOP]
    return part[np.lexsort((part, d[part]))].tolist()


def evaluate(path: Path, n_seeds: int | None) -> list[dict]:
    songs, labels = load(path)
    n = len(songs)
    raw9 = np.array([[s[f] for f in AUDIO_FEATURES] for s in songs])
    raw10 = np.array([[s[c] for c in RAW_COLUMNS] for s in songs])
    k = k_for(n)
    model = LoadedModel.from_portable(fit_model(raw9, k))
    records = [
        SongRecord(
            track_id=s["track_id"],
            name=s["name"],
            artists=tuple(a for a in s["artists"] if a) or ("?",),
            features=tuple(raw9[i].tolist()),
            table_version=1,
            popularity=s["popularity"],
        )
        for i, s in enumerate(songs)
    ]
    index = build_index(records, model)
    assert all(index.track_id(i) == s["track_id"] for i, s in enumerate(songs))
    z = index.z
    rng = np.random.default_rng(5)
    seeds = (
        list(range(n))
        if n_seeds is None
        else rng.choice(n, size=min(n_seeds, n), replace=False).tolist()
    )
    methods = {
        "emergify (default rules)": lambda s: [
            r.row for r in rank(index, z[s], None, TOP, seeds=[s])
        ],
        "emergify, no artist cap": lambda s: [
            r.row for r in rank(index, z[s], None, TOP, max_per_artist=10**6, seeds=[s])
        ],
        "(a) raw Manhattan, original notebooks": lambda s: brute(raw10, s),
        "(b) exact scaled Manhattan": lambda s: brute(z, s),
        "(c) random": lambda s: [
            int(r) for r in rng.choice(np.delete(np.arange(n), s), size=TOP, replace=False)
        ],
    }
    rows = []
    for name, method in methods.items():
        lists = [method(s) for s in seeds]
        rows.append(
            {
                "file": path.name,
                "songs": n,
                "seeds": len(seeds),
                "k": k,
                "method": name,
                "precision_at_10": precision(lists, seeds, labels),
            }
        )
        print(f"   {path.name[:20]:<20} {name:<40} {rows[-1]['precision_at_10']:.4f}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description="genre precision@10 on the labelled files")
    parser.add_argument("--quick", action="store_true", help="500 seeds per file")
    args = parser.parse_args()
    rows: list[dict] = []
    for name in FILES:
        rows += evaluate(DATA / name, 500 if args.quick else None)
    print()
    print("| file | songs | seeds | method | genre precision@10 |")
    print("|---|---:|---:|---|---:|")
    for r in rows:
        print(
            f"| {r['file']} | {r['songs']:,} | {r['seeds']:,} | {r['method']} "
            f"| {r['precision_at_10']:.4f} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quality.json").write_text(json.dumps({"top": TOP, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
