"""Offline evaluation of the similarity on labelled CSVs: the core of ``emergify evaluate``.

Protocol (docs/similarity.md): one song per track id; every labelled song (or a sample) is a
seed; each method ranks the whole catalog by its distance (exact, brute force), then the
product's playlist rules pick 10; metrics compare the picks' labels with the seed's. The
label is never a feature. The artist weight is chosen on validation seeds (artists disjoint
from the test seeds) and reported on the test seeds.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emergify_contracts.artist_profiles import (
    MULTI_ARTIST_RULES,
    MultiArtistRule,
    artist_keys,
    artist_profiles,
    song_artist_vectors,
)
from emergify_contracts.similarity import blended_vectors
from emergify_contracts.song import AUDIO_FEATURES, Layout, RowError, detect_layout, row_to_song
from emergify_contracts.song_keys import dedup_key, normalize_text

#: The original notebooks' columns: raw, unscaled, key included (tempo and loudness dominate).
NOTEBOOK_COLUMNS: tuple[str, ...] = (
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
)
DEFAULT_WEIGHTS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0)
_CHUNK = 128  # seeds whose distance rows are computed at once (memory: chunk x n x 18)


@dataclass
class LabelledCatalog:
    """One song per track id with its features, artists, label set and genre tags."""

    path: str
    label: str
    track_ids: list[str]
    names: list[str]
    artists: list[tuple[str, ...]]
    artist_keys: list[tuple[str, ...]]
    raw: np.ndarray  # n x 9, AUDIO_FEATURES order
    notebook: np.ndarray  # n x 10, NOTEBOOK_COLUMNS (key missing -> 0)
    popularity: np.ndarray  # n, float, nan when unknown
    labels: list[frozenset[str]]
    tags: list[frozenset[str]]
    rows_read: int = 0
    rows_rejected: int = 0
    duplicate_rows: int = 0
    multi_label_songs: int = 0

    def __len__(self) -> int:
        return len(self.track_ids)


def _label_values(text: str) -> frozenset[str]:
    return frozenset(v for v in (normalize_text(p) for p in text.split(",")) if v)


def load_labelled(path: Path, label: str = "playlist_genre") -> LabelledCatalog:
    """Read a labelled CSV (any layout ``emergify upload`` accepts).

    A track id listed several times (the Kaggle files list a track under each playlist it
    was taken from) is one song: features of its first valid row, labels the union over its
    rows, so a pick is relevant when any label matches. A label cell may hold several
    comma-separated values. Genre tags are read only from a layout's artist-genre column and
    never from the label column: the genre-labelled layout's ``genres`` is ``playlist_genre``,
    the label itself.
    """
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = list(reader.fieldnames or [])
        layout = detect_layout(header)
        label_column = next((c for c in header if c.strip().lower() == label.lower()), None)
        if label_column is None:
            raise ValueError(f"{path.name} has no label column {label!r}; columns: {header}")
        genre_column = next((c for c in header if c.strip().lower() == "genres"), None)
        tags_allowed = layout is not Layout.GENRE_LABELLED and genre_column != label_column
        by_id: dict[str, int] = {}
        out = LabelledCatalog(
            str(path), label, [], [], [], [], np.empty(0), np.empty(0), np.empty(0), [], []
        )
        raw, notebook, popularity, labels = [], [], [], []
        for row in reader:
            out.rows_read += 1
            try:
                song = row_to_song(row, layout)
            except RowError:
                out.rows_rejected += 1
                continue
            values = _label_values(row.get(label_column) or "")
            if song.track_id in by_id:
                out.duplicate_rows += 1
                i = by_id[song.track_id]
                labels[i] = labels[i] | values
                continue
            by_id[song.track_id] = len(out.track_ids)
            out.track_ids.append(song.track_id)
            out.names.append(song.name)
            out.artists.append(tuple(song.artists))
            out.artist_keys.append(artist_keys(song.artists, song.artist_ids))
            raw.append(song.features())
            key = song.key if song.key is not None and song.key >= 0 else 0
            notebook.append([key if c == "key" else getattr(song, c) for c in NOTEBOOK_COLUMNS])
            popularity.append(np.nan if song.popularity is None else song.popularity)
            labels.append(values)
            tags = song.genres if tags_allowed else []
            out.tags.append(frozenset(normalize_text(t) for t in tags if t.strip()))
    out.raw = np.array(raw, dtype=np.float64).reshape(-1, len(AUDIO_FEATURES))
    out.notebook = np.array(notebook, dtype=np.float64).reshape(-1, len(NOTEBOOK_COLUMNS))
    out.popularity = np.array(popularity, dtype=np.float64)
    out.labels = labels
    out.multi_label_songs = sum(len(v) > 1 for v in labels)
    return out


def standardize(raw: np.ndarray) -> np.ndarray:
    """The model's scaler on this catalog: mean and sample standard deviation (as Spark's
    StandardScaler), a constant column left at scale 1."""
    scales = raw.std(axis=0, ddof=1) if len(raw) > 1 else np.ones(raw.shape[1])
    return (raw - raw.mean(axis=0)) / np.where(scales > 0, scales, 1.0)


@dataclass(frozen=True)
class Method:
    """A ranking to evaluate: L1 over ``vectors``, or a random order when None."""

    name: str
    vectors: np.ndarray | None
    family: str
    weight: float | None = None
    rule: str | None = None


def tag_vectors(tags: Sequence[frozenset[str]]) -> np.ndarray:
    """Multi-hot genre tags, each song's row summing to 1 (0 when it has none), so the L1
    between two tagged songs runs from 0 (same tags) to 2 (disjoint) and stays an L1."""
    vocabulary = sorted({t for s in tags for t in s})
    column = {t: i for i, t in enumerate(vocabulary)}
    out = np.zeros((len(tags), len(vocabulary)))
    for i, s in enumerate(tags):
        for t in s:
            out[i, column[t]] = 1.0 / len(s)
    return out


def methods_for(
    catalog: LabelledCatalog,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    rules: Sequence[MultiArtistRule] = MULTI_ARTIST_RULES,
    tag_weights: Sequence[float] = (),
    tag_base: tuple[float, MultiArtistRule] | None = None,
) -> list[Method]:
    """Random, the notebooks' raw Manhattan, exact scaled Manhattan, the hybrid for every
    (rule, weight), and (when the catalog has tags) the hybrid plus tags."""
    z = standardize(catalog.raw)
    profiles = artist_profiles(z, catalog.artist_keys)
    methods = [
        Method("random", None, "random"),
        Method("raw Manhattan (notebooks)", catalog.notebook, "raw"),
        Method("scaled Manhattan (exact)", z, "scaled"),
    ]
    for rule in rules:
        a = song_artist_vectors(profiles, catalog.artist_keys, rule, fallback=z)
        for w in weights:
            methods.append(
                Method(f"hybrid {rule} w={w:g}", blended_vectors(z, a, w), "hybrid", w, rule)
            )
    if tag_weights and tag_base and any(catalog.tags):
        w, rule = tag_base
        base = blended_vectors(z, song_artist_vectors(profiles, catalog.artist_keys, rule, z), w)
        t = tag_vectors(catalog.tags)
        for tw in tag_weights:
            methods.append(
                Method(
                    f"hybrid {rule} w={w:g} + tags {tw:g}",
                    np.hstack([base, tw * t]),
                    "hybrid+tags",
                    w,
                    rule,
                )
            )
    return methods


@dataclass
class _Prepared:
    """What the rules and metrics need, as integer arrays."""

    dedup: np.ndarray  # n, int: same id = same recording
    artist_rows: list[list[int]]  # per song: artist ids (ints) for the per-artist cap
    label_hot: np.ndarray  # n x L, bool
    labelled: np.ndarray  # n, bool


def _prepare(catalog: LabelledCatalog) -> _Prepared:
    dedup_ids: dict[tuple[str, tuple[str, ...]], int] = {}
    dedup = np.array(
        [
            dedup_ids.setdefault(dedup_key(n, artists), len(dedup_ids))
            for n, artists in zip(catalog.names, catalog.artists, strict=True)
        ]
    )
    artist_ids: dict[str, int] = {}
    artist_rows = [
        [artist_ids.setdefault(k, len(artist_ids)) for k in keys] for keys in catalog.artist_keys
    ]
    vocabulary = sorted({v for s in catalog.labels for v in s})
    column = {v: i for i, v in enumerate(vocabulary)}
    hot = np.zeros((len(catalog), len(vocabulary)), dtype=bool)
    for i, s in enumerate(catalog.labels):
        hot[i, [column[v] for v in s]] = True
    return _Prepared(dedup, artist_rows, hot, hot.any(axis=1))


def _pick(
    order: np.ndarray,
    seed: int,
    prep: _Prepared,
    top: int,
    max_per_artist: int,
    exclude_seed_artists: bool,
) -> list[int]:
    """The product's playlist rules, greedy in distance order: never the seed, never a
    duplicate of the seed or of a pick, at most ``max_per_artist`` per credited artist; and,
    for the artist-excluded variant, never a song crediting one of the seed's artists."""
    taken = {int(prep.dedup[seed])}
    seed_artists = set(prep.artist_rows[seed])
    per_artist: dict[int, int] = {}
    picks: list[int] = []
    for row in order.tolist():
        if row == seed or prep.dedup[row] in taken:
            continue
        artists = prep.artist_rows[row]
        if exclude_seed_artists and seed_artists.intersection(artists):
            continue
        if any(per_artist.get(a, 0) >= max_per_artist for a in artists):
            continue
        picks.append(row)
        taken.add(int(prep.dedup[row]))
        for a in artists:
            per_artist[a] = per_artist.get(a, 0) + 1
        if len(picks) == top:
            break
    return picks


@dataclass
class _Lists:
    plain: dict[int, list[int]] = field(default_factory=dict)
    excluded: dict[int, list[int]] = field(default_factory=dict)


def rank_lists(
    method: Method,
    seeds: Sequence[int],
    prep: _Prepared,
    top: int = 10,
    max_per_artist: int = 2,
    random_seed: int = 5,
) -> _Lists:
    """Each seed's picks under the rules, plain and with the seed's artists excluded."""
    n = len(prep.dedup)
    out = _Lists()
    rng = np.random.default_rng(random_seed)
    seeds = list(seeds)
    for start in range(0, len(seeds), _CHUNK):
        chunk = seeds[start : start + _CHUNK]
        if method.vectors is None:
            orders = [rng.permutation(n) for _ in chunk]
        else:
            x = method.vectors
            d = np.abs(x[None, :, :] - x[chunk][:, None, :]).sum(axis=2)
            # stable: ties go to the lower row, as the recommender breaks them
            orders = list(np.argsort(d, axis=1, kind="stable"))
        for seed, order in zip(chunk, orders, strict=True):
            out.plain[seed] = _pick(order, seed, prep, top, max_per_artist, False)
            out.excluded[seed] = _pick(order, seed, prep, top, max_per_artist, True)
    return out


def _precision_ndcg(
    lists: dict[int, list[int]], prep: _Prepared, top: int, exclude_seed_artists: bool
) -> tuple[float, float]:
    discounts = 1.0 / np.log2(np.arange(2, top + 2))
    precisions, ndcgs = [], []
    hot = prep.label_hot.astype(np.int32)
    for seed, picks in lists.items():
        relevant = (hot @ hot[seed]) > 0
        relevant[seed] = False
        if exclude_seed_artists:
            seed_artists = set(prep.artist_rows[seed])
            for row in np.flatnonzero(relevant):
                if seed_artists.intersection(prep.artist_rows[row]):
                    relevant[row] = False
        rel = relevant[picks].astype(np.float64) if picks else np.zeros(0)
        precisions.append(rel.sum() / top)
        available = int(relevant.sum())
        if available:
            ideal = discounts[: min(top, available)].sum()
            ndcgs.append(float((rel * discounts[: rel.size]).sum() / ideal))
    return float(np.mean(precisions)), float(np.mean(ndcgs)) if ndcgs else 0.0


def metrics(
    lists: _Lists, prep: _Prepared, z: np.ndarray, popularity: np.ndarray, top: int = 10
) -> dict[str, float]:
    """precision@k and nDCG@k (plain and seed's artists excluded), catalog coverage,
    intra-list diversity (mean pairwise standardized audio L1) and mean pick popularity."""
    p, ndcg = _precision_ndcg(lists.plain, prep, top, False)
    px, ndcgx = _precision_ndcg(lists.excluded, prep, top, True)
    recommended = {r for picks in lists.plain.values() for r in picks}
    diversity = []
    for picks in lists.plain.values():
        if len(picks) > 1:
            v = z[picks]
            pair = np.abs(v[:, None, :] - v[None, :, :]).sum(axis=2)
            diversity.append(pair.sum() / (len(picks) * (len(picks) - 1)))
    pops = np.array([popularity[r] for picks in lists.plain.values() for r in picks])
    pops = pops[~np.isnan(pops)] if pops.size else pops
    return {
        "precision_at_k": p,
        "ndcg_at_k": ndcg,
        "precision_at_k_artist_excluded": px,
        "ndcg_at_k_artist_excluded": ndcgx,
        "coverage": len(recommended) / len(z),
        "intra_list_diversity": float(np.mean(diversity)) if diversity else 0.0,
        "mean_popularity": float(pops.mean()) if pops.size else float("nan"),
    }


def split_seeds(catalog: LabelledCatalog, seeds: Sequence[int]) -> tuple[list[int], list[int]]:
    """Validation and test seeds, about half each, grouped by first credited artist (a
    stable hash), so no artist has seeds on both sides: the weight is chosen on artists it
    is then not tested on."""
    validation, test = [], []
    for s in seeds:
        key = (catalog.artist_keys[s] or ("",))[0]
        bucket = hashlib.sha256(key.encode()).digest()[0] % 2
        (validation if bucket == 0 else test).append(s)
    return validation, test


@dataclass
class FileResult:
    """One file's figures: every method on the validation and test seeds."""

    catalog: LabelledCatalog
    rows: list[dict[str, Any]]


def evaluate_file(
    catalog: LabelledCatalog,
    methods: Sequence[Method],
    sample: int | None = None,
    top: int = 10,
    max_per_artist: int = 2,
    seed: int = 5,
    progress: Callable[[str], None] | None = None,
) -> FileResult:
    """Every method on this file, figures on the validation seeds, the test seeds and all."""
    prep = _prepare(catalog)
    z = standardize(catalog.raw)
    seeds = np.flatnonzero(prep.labelled)
    if sample is not None and sample < seeds.size:
        seeds = np.sort(np.random.default_rng(seed).choice(seeds, size=sample, replace=False))
    validation, test = split_seeds(catalog, seeds.tolist())
    rows = []
    for method in methods:
        lists = rank_lists(method, seeds.tolist(), prep, top, max_per_artist, seed)
        row: dict[str, Any] = {
            "file": Path(catalog.path).name,
            "method": method.name,
            "family": method.family,
            "artist_weight": method.weight,
            "multi_artist_rule": method.rule,
        }
        for part, part_seeds in (("validation", validation), ("test", test), ("all", seeds)):
            subset = _Lists(
                {s: lists.plain[s] for s in part_seeds},
                {s: lists.excluded[s] for s in part_seeds},
            )
            row[part] = metrics(subset, prep, z, catalog.popularity, top)
            row[part]["seeds"] = len(part_seeds)
        rows.append(row)
        if progress:
            progress(f"{row['file']}: {method.name}: P@{top} {row['all']['precision_at_k']:.4f}")
    return FileResult(catalog, rows)


def selection_score(metrics_row: dict[str, float]) -> float:
    """What the weight is chosen by: precision@k with the seed's artists excluded. The plain
    precision@k keeps rising with the weight because the seed's own artist's songs count as
    hits (up to the per-artist cap); the product is for discovering *other* artists, and
    this figure is the part of the gain that carries over to them."""
    return metrics_row["precision_at_k_artist_excluded"]


def choose_hybrid(results: Sequence[FileResult]) -> dict[str, Any]:
    """The (rule, weight) with the best validation score averaged over the files."""
    scores: dict[tuple[str, float], list[float]] = {}
    for result in results:
        for row in result.rows:
            if row["family"] == "hybrid":
                key = (row["multi_artist_rule"], row["artist_weight"])
                scores.setdefault(key, []).append(selection_score(row["validation"]))
    complete = {k: v for k, v in scores.items() if len(v) == len(results)}
    if not complete:
        raise ValueError("no hybrid method was evaluated on every file")
    (rule, weight), best = max(complete.items(), key=lambda kv: (np.mean(kv[1]), -kv[0][1]))
    return {
        "multi_artist_rule": rule,
        "artist_weight": weight,
        "validation_score": float(np.mean(best)),
        "criterion": "mean over files of P@k with the seed's artists excluded, validation seeds; "
        "ties to the smaller weight",
        "grid": {f"{r} w={w:g}": float(np.mean(v)) for (r, w), v in sorted(complete.items())},
    }


def summary_table(results: Sequence[FileResult], part: str = "test", top: int = 10) -> str:
    """A Markdown table of every method on every file."""
    lines = [
        f"| file | method | P@{top} | nDCG@{top} | P@{top} artist excl. | nDCG@{top} artist excl. "
        "| coverage | diversity | mean popularity |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for row in result.rows:
            m = row[part]
            lines.append(
                f"| {row['file']} | {row['method']} | {m['precision_at_k']:.4f} "
                f"| {m['ndcg_at_k']:.4f} | {m['precision_at_k_artist_excluded']:.4f} "
                f"| {m['ndcg_at_k_artist_excluded']:.4f} | {m['coverage']:.3f} "
                f"| {m['intra_list_diversity']:.2f} | {m['mean_popularity']:.1f} |"
            )
    return "\n".join(lines)


def write_chart(results: Sequence[FileResult], chosen: dict[str, Any], out: Path) -> None:
    """Bar chart: P@k and P@k with the seed's artists excluded per method, one panel per
    file (test seeds); the chosen hybrid highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 6), squeeze=False)
    for ax, result in zip(axes[0], results, strict=True):
        rows = [
            r
            for r in result.rows
            if r["family"] != "hybrid" or r["multi_artist_rule"] == chosen["multi_artist_rule"]
        ]

        def is_chosen(r: dict[str, Any]) -> bool:
            return r["family"] == "hybrid" and (r["artist_weight"], r["multi_artist_rule"]) == (
                chosen["artist_weight"],
                chosen["multi_artist_rule"],
            )

        names = [r["method"] + (" (chosen)" if is_chosen(r) else "") for r in rows]
        p = [r["test"]["precision_at_k"] for r in rows]
        px = [r["test"]["precision_at_k_artist_excluded"] for r in rows]
        y = np.arange(len(rows))
        ax.barh(y - 0.2, p, 0.4, label="precision@10 (default rules)")
        ax.barh(y + 0.2, px, 0.4, label="precision@10, seed's artist excluded")
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_title(f"{result.rows[0]['file']} (test seeds)")
        ax.set_xlabel("share of the 10 picks with the seed's label")
        ax.grid(axis="x", alpha=0.3)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def acceptance(results: Sequence[FileResult], chosen: dict[str, Any]) -> list[dict[str, Any]]:
    """Per file, on the test seeds: the chosen hybrid against exact scaled Manhattan."""
    out = []
    for result in results:
        by_name = {r["method"]: r for r in result.rows}
        base = by_name["scaled Manhattan (exact)"]["test"]
        name = f"hybrid {chosen['multi_artist_rule']} w={chosen['artist_weight']:g}"
        hybrid = by_name[name]["test"]
        gain = hybrid["precision_at_k_artist_excluded"] / base["precision_at_k_artist_excluded"]
        out.append(
            {
                "file": result.rows[0]["file"],
                "method": name,
                "precision_at_k": hybrid["precision_at_k"],
                "precision_at_k_scaled": base["precision_at_k"],
                "precision_at_k_artist_excluded": hybrid["precision_at_k_artist_excluded"],
                "precision_at_k_artist_excluded_scaled": base["precision_at_k_artist_excluded"],
                "artist_excluded_gain": gain - 1,
            }
        )
    return out


def run_evaluation(
    paths: Sequence[Path],
    label: str = "playlist_genre",
    sample: int | None = None,
    weights: Sequence[float] = DEFAULT_WEIGHTS,
    rules: Sequence[MultiArtistRule] = MULTI_ARTIST_RULES,
    top: int = 10,
    max_per_artist: int = 2,
    tag_weights: Sequence[float] = (0.5, 1.0, 2.0),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate every method on every file, choose the hybrid on the validation seeds, then
    (files with genre tags only) the chosen hybrid plus tags. Returns the JSON document."""
    catalogs = [load_labelled(p, label) for p in paths]
    results = [
        evaluate_file(
            c, methods_for(c, weights, rules), sample, top, max_per_artist, progress=progress
        )
        for c in catalogs
    ]
    chosen = choose_hybrid(results)
    tags = []
    for c, result in zip(catalogs, results, strict=True):
        if any(c.tags):
            base = (chosen["artist_weight"], chosen["multi_artist_rule"])
            extra = [
                m for m in methods_for(c, (), (), tag_weights, base) if m.family == "hybrid+tags"
            ]
            result.rows += evaluate_file(c, extra, sample, top, max_per_artist).rows
        tags.append({"file": Path(c.path).name, "songs_with_tags": sum(bool(t) for t in c.tags)})
    return {
        "label": label,
        "top": top,
        "rules": {
            "max_per_artist": max_per_artist,
            "no_seed": True,
            "no_duplicates": "same normalized title (version suffixes dropped) and artists",
            "max_popularity": "not applied: reported as mean popularity (the files are split "
            "by popularity; the high file lies entirely above any emerging threshold)",
        },
        "duplicates": "one song per track id: first valid row's features, labels = union "
        "over its rows; a pick is relevant when any label matches the seed's",
        "files": [
            {
                "file": Path(c.path).name,
                "rows": c.rows_read,
                "rejected_rows": c.rows_rejected,
                "duplicate_rows": c.duplicate_rows,
                "songs": len(c),
                "songs_with_several_labels": c.multi_label_songs,
            }
            for c in catalogs
        ],
        "tags": tags,
        "chosen": chosen,
        "acceptance": acceptance(results, chosen),
        "rows": [r for result in results for r in result.rows],
        "_results": results,
    }
