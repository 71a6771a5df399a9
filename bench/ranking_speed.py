"""Single-query k=30 ranking speed and recall per catalog shape: Emergify vs FAISS,
scikit-learn and Annoy.

    uv run python bench/ranking_speed.py                       # 1M songs, every shape
    uv run python bench/ranking_speed.py --sizes 10000000 --shapes marginals --queries 200
    uv run python bench/ranking_speed.py --quick               # 20k songs, every shape

Catalogs come from bench/catalogs.py, one per shape (``bootstrap5``, ``bootstrap30``,
``marginals``, ``mixture``: see there); a model (StandardScaler -> PCA -> KMeans, k growing
with the catalog) is fitted on each. Every query is a catalog song's standardized vector;
the song itself is not an answer. The exact answer every recall is measured against is a
float64 brute force (tests/ranking_reference.py), ties by row.

- Emergify: ``emergify_recommender.ranking.rank`` on a real ``SongIndex`` (the code path the
  API calls, no HTTP): with no artist cap (the libraries' question; duplicates of a chosen
  song are still skipped: a rule, not an option); with the default rules (2 per artist);
  and with ``max_popularity=0`` (a cap that filters most songs). Rule-aware rows are
  checked for equality against the rule-aware brute force on a subset of queries.
- FAISS ``IndexFlat(d, METRIC_L1)`` on float32, single-threaded (the reference the target
  is stated against).
- scikit-learn ``NearestNeighbors(metric="manhattan")``, algorithm "auto" (it picks a KD
  tree for 9 dimensions).
- Annoy (``metric="manhattan"``, 16 trees), with its default ``search_k`` and with 8x it:
  approximate, so its recall is reported beside its speed.

Latency is wall time per single query (``perf_counter``), p50/p99 over the queries, and
the CPU time the process spent on it (``process_time``): on a shared machine a query
preempted by another process shows in the wall p99 but not in the CPU one. The 1-minute
load average is printed with each row. Results go to bench/results/ranking_speed.json.
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

from catalogs import SHAPES, fit_model, k_for, synthetic_catalog
from ranking_reference import brute_force, weighted_l1

from emergify_recommender import nearest
from emergify_recommender.build import build_index
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import rank

HERE = Path(__file__).resolve().parent
K = 30
RESULTS = HERE / "results"
ANNOY_TREES = 16


def exact_top(z: np.ndarray, q: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Exact L1 top-k (float64, terms in feature order, ties by row), the seed excluded."""
    d, _ = weighted_l1(z, q, np.ones(z.shape[1]))
    d[seed] = np.inf
    part = np.argpartition(d, k)[: k + 1]
    part = part[np.lexsort((part, d[part]))]
    return part[:k]


def timed(fn, queries: list[int]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """Answers, wall ms and CPU ms per query."""
    out, lat, cpu = [], [], []
    for s in queries:
        c = time.process_time()
        t = time.perf_counter()
        out.append(fn(s))
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return out, np.array(lat) * 1e3, np.array(cpu) * 1e3


def load_average() -> float:
    return os.getloadavg()[0]


def recall(got: list[np.ndarray], truth: list[np.ndarray]) -> float:
    return float(
        np.mean(
            [
                len(set(g.tolist()) & set(t.tolist())) / len(t)
                for g, t in zip(got, truth, strict=True)
            ]
        )
    )


def run_catalog(
    n: int, shape: str, n_queries: int, n_checks: int, libraries: bool = True
) -> list[dict]:
    import annoy
    import faiss
    from sklearn.neighbors import NearestNeighbors

    print(f"-- {n:,} songs, shape {shape}: generating, fitting, indexing ...", flush=True)
    cat = synthetic_catalog(n, shape=shape)
    k = k_for(n)
    model = LoadedModel.from_portable(fit_model(cat.features, k))
    t = time.perf_counter()
    index = build_index(cat.records(), model)
    build_s = time.perf_counter() - t
    del cat
    z = index.z  # float64, row order
    rng = np.random.default_rng(11)
    queries = rng.choice(n, size=min(n_queries, n), replace=False).tolist()
    truth = [exact_top(z, z[s], s, K) for s in queries]
    rows: list[dict] = []

    def add(method: str, got: list[np.ndarray], timing: list[np.ndarray], note: str = "") -> None:
        lat, cpu = timing
        rows.append(
            {
                "songs": n,
                "shape": shape,
                "method": method,
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
                "cpu_p50_ms": float(np.percentile(cpu, 50)),
                "cpu_p99_ms": float(np.percentile(cpu, 99)),
                "recall_at_30": recall(got, truth[: len(got)]),
                "queries": len(got),
                "load_average": load_average(),
                "index_build_s": build_s,
                "note": note,
            }
        )
        r = rows[-1]
        print(
            f"   {method:<40} p50 {r['p50_ms']:7.3f} ms  p99 {r['p99_ms']:7.3f} ms  "
            f"cpu p50 {r['cpu_p50_ms']:6.3f} p99 {r['cpu_p99_ms']:6.3f} ms  "
            f"recall@30 {r['recall_at_30']:.4f}  load {r['load_average']:.1f}",
            flush=True,
        )

    check = queries[:n_checks]
    # Untimed warm-up (the service warms the kernel at start-up too).
    nearest.warm()
    rank(index, z[queries[0]], None, K, max_per_artist=10**6, exclude=[queries[0]])
    got, *timing = timed(
        lambda s: np.array(
            [r.row for r in rank(index, z[s], None, K, max_per_artist=10**6, exclude=[s])]
        ),
        queries,
    )
    add("emergify exact (no artist cap)", got, timing, f"{index.cells.n_cells} cells")
    for label, rules in (
        ("emergify exact + rules (2/artist, dedup)", {}),
        ("emergify exact + rules + max_popularity=0", {"max_popularity": 0}),
    ):
        same = sum(
            [r.row for r in rank(index, z[s], None, K, seeds=[s], **rules)]
            == [r.row for r in brute_force(index, z[s], K, seeds=[s], **rules)]
            for s in check
        )
        got_r, *timing = timed(
            lambda s, rules=rules: np.array(
                [r.row for r in rank(index, z[s], None, K, seeds=[s], **rules)]
            ),
            queries,
        )
        passing = float((index.popularity <= rules.get("max_popularity", 10**6)).mean())
        add(
            label,
            got_r,
            timing,
            f"equal to the rule-aware brute force on {same}/{len(check)} queries; "
            f"{passing:.0%} of songs pass the cap; recall vs plain kNN",
        )

    z32 = z.astype(np.float32)
    faiss.omp_set_num_threads(1)
    flat = faiss.IndexFlat(z32.shape[1], faiss.METRIC_L1)
    flat.add(z32)
    flat.search(z32[queries[0] : queries[0] + 1], K + 1)

    def faiss_query(s: int) -> np.ndarray:
        _, ids = flat.search(z32[s : s + 1], K + 1)
        return ids[0][ids[0] != s][:K]

    got, *timing = timed(faiss_query, queries)
    add("faiss IndexFlat L1, 1 thread", got, timing, "float32")
    if not libraries:
        return rows

    nn = NearestNeighbors(n_neighbors=K + 1, metric="manhattan").fit(z32)
    chosen = getattr(nn, "_fit_method", "auto")

    def sk_query(s: int) -> np.ndarray:
        ids = nn.kneighbors(z32[s : s + 1], return_distance=False)[0]
        return ids[ids != s][:K]

    got, *timing = timed(sk_query, queries)
    add(f"sklearn NearestNeighbors (auto -> {chosen})", got, timing)

    t = time.perf_counter()
    ann = annoy.AnnoyIndex(z32.shape[1], "manhattan")
    for i in range(z32.shape[0]):
        ann.add_item(i, z32[i])
    ann.build(ANNOY_TREES, n_jobs=1)
    annoy_build = time.perf_counter() - t
    for search_k in (-1, 8 * ANNOY_TREES * (K + 1)):

        def annoy_query(s: int, search_k: int = search_k) -> np.ndarray:
            ids = np.array(ann.get_nns_by_item(s, K + 1, search_k=search_k))
            return ids[ids != s][:K]

        got, *timing = timed(annoy_query, queries)
        add(
            f"annoy manhattan, {ANNOY_TREES} trees, search_k={search_k}",
            got,
            timing,
            f"approximate; built in {annoy_build:.0f} s",
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k songs, 200 queries")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--shapes", nargs="*", default=list(SHAPES), choices=SHAPES)
    parser.add_argument("--queries", type=int, default=None)
    parser.add_argument("--checks", type=int, default=50, help="equality checks per row")
    parser.add_argument("--out", default=None, help="results file name in bench/results/")
    parser.add_argument(
        "--no-libraries", action="store_true", help="Emergify and FAISS only (no sklearn, Annoy)"
    )
    args = parser.parse_args()
    sizes = args.sizes or ([20_000] if args.quick else [1_000_000])
    n_queries = args.queries or (200 if args.quick else 500)
    print(f"ranking speed: k={K}, {n_queries} single queries per catalog, cpus={os.cpu_count()}")
    rows: list[dict] = []
    for n in sizes:
        for shape in args.shapes:
            rows += run_catalog(n, shape, n_queries, args.checks, not args.no_libraries)
    print()
    print(
        "| songs | shape | method | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | recall@30 "
        "| load | note |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['songs']:,} | {r['shape']} | {r['method']} | {r['p50_ms']:.3f} "
            f"| {r['p99_ms']:.3f} | {r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} "
            f"| {r['recall_at_30']:.4f} | {r['load_average']:.1f} | {r['note']} |"
        )
    RESULTS.mkdir(exist_ok=True)
    name = args.out or ("ranking_speed.json" if not args.quick else "ranking_speed_quick.json")
    (RESULTS / name).write_text(json.dumps({"k": K, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
