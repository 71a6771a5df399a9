"""Single-query k=30 ranking speed and recall: Emergify vs FAISS, scikit-learn and NumPy.

    uv run python bench/ranking_speed.py            # 4,470 / 100k / 1M songs, 1,000 queries
    uv run python bench/ranking_speed.py --quick    # 4,470 / 20k songs, 200 queries

Catalogs come from bench/catalogs.py (bootstrap of the real songs + noise); a model
(StandardScaler -> PCA -> KMeans, k growing with the catalog) is fitted on each. Every
query is a catalog song's standardized vector; the song itself is not an answer.

- Emergify: ``emergify_recommender.ranking.rank`` on a real ``SongIndex`` (the code path the
  API calls, no HTTP), with no artist cap so it answers the same question as the others
  (duplicates of a chosen song are still skipped: that is a rule, not an option), and
  again with the default rules (max 2 per artist).
- NumPy brute force, float64: the exact answer every recall is measured against.
- FAISS ``IndexFlat(d, METRIC_L1)`` on float32, single-threaded and with FAISS's default
  thread count.
- scikit-learn ``NearestNeighbors(metric="manhattan")``, algorithm "auto" (reported: for 9
  dimensions it picks a KD tree) and "brute".

Latency is wall time per single query (``perf_counter``), p50/p99 over the queries, and
the CPU time the process spent on it (``process_time``, every thread counted): on a shared
machine a query preempted by another process shows in the wall p99 but not in the CPU
one. The 1-minute load average is printed with each catalog. Results also go to
bench/results/ranking_speed.json.
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

from catalogs import fit_model, k_for, synthetic_catalog

from emergify_recommender.build import build_index
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import rank

K = 30
RESULTS = Path(__file__).resolve().parent / "results"


def exact_top(z: np.ndarray, q: np.ndarray, seed: int, k: int) -> np.ndarray:
    """Exact L1 top-k (float64, ties by row), the seed excluded."""
    d = np.abs(z - q).sum(axis=1)
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


def run_size(n: int, n_queries: int, with_numpy: bool) -> list[dict]:
    import faiss
    from sklearn.neighbors import NearestNeighbors

    print(f"-- {n:,} songs: generating, fitting, indexing ...", flush=True)
    cat = synthetic_catalog(n)
    k = k_for(n)
    model = LoadedModel.from_portable(fit_model(cat.features, k))
    t = time.perf_counter()
    index = build_index(cat.records(), model)
    build_s = time.perf_counter() - t
    # Row i of the index is catalog row i (ids are unique); check rather than assume.
    assert index.track_id(n - 1) == cat.ids[n - 1].decode()
    z = index.z  # float64, row order
    z32 = z.astype(np.float32)
    rng = np.random.default_rng(11)
    queries = rng.choice(n, size=min(n_queries, n), replace=False).tolist()
    truth = [exact_top(z, z[s], s, K) for s in queries]
    rows: list[dict] = []

    def add(method: str, got: list[np.ndarray], timing: list[np.ndarray], note: str = "") -> None:
        lat, cpu = timing
        rows.append(
            {
                "songs": n,
                "method": method,
                "p50_ms": float(np.percentile(lat, 50)),
                "p99_ms": float(np.percentile(lat, 99)),
                "cpu_p50_ms": float(np.percentile(cpu, 50)),
                "cpu_p99_ms": float(np.percentile(cpu, 99)),
                "recall_at_30": recall(got, truth),
                "queries": len(got),
                "load_average": load_average(),
                "note": note,
            }
        )
        r = rows[-1]
        print(
            f"   {method:<38} p50 {r['p50_ms']:8.3f} ms  p99 {r['p99_ms']:8.3f} ms  "
            f"cpu p50 {r['cpu_p50_ms']:7.3f} p99 {r['cpu_p99_ms']:7.3f} ms  "
            f"recall@30 {r['recall_at_30']:.4f}  load {r['load_average']:.1f}",
            flush=True,
        )

    # Warm up caches and lazy imports once, untimed.
    rank(index, z[queries[0]], None, K, max_per_artist=10**6, exclude=[queries[0]])
    got, *timing = timed(
        lambda s: np.array(
            [r.row for r in rank(index, z[s], None, K, max_per_artist=10**6, exclude=[s])]
        ),
        queries,
    )
    add("emergify (cluster-pruned exact)", got, timing, f"k={k}, {index.cells.n_cells} cells")
    # Equality with the brute force under the default rules, on a subset (it is O(n)).
    check = queries[: min(50, len(queries))]
    same = sum(
        [r.row for r in rank(index, z[s], None, K, seeds=[s])]
        == [r.row for r in brute_force(index, z[s], K, seeds=[s])]
        for s in check
    )
    got_r, *timing = timed(
        lambda s: np.array([r.row for r in rank(index, z[s], None, K, seeds=[s])]), queries
    )
    add(
        "emergify + rules (2/artist, dedup)",
        got_r,
        timing,
        f"equal to rule-aware brute force on {same}/{len(check)} queries; recall vs plain kNN",
    )

    if with_numpy:
        got, *timing = timed(lambda s: exact_top(z, z[s], s, K), queries)
        add("numpy brute force (float64, exact)", got, timing)

    threads = faiss.omp_get_max_threads()
    flat = faiss.IndexFlat(z32.shape[1], faiss.METRIC_L1)
    flat.add(z32)
    for label, nt in (
        ("faiss IndexFlat L1, 1 thread", 1),
        (f"faiss IndexFlat L1, {threads} threads", threads),
    ):
        faiss.omp_set_num_threads(nt)
        flat.search(z32[queries[0] : queries[0] + 1], K + 1)

        def faiss_query(s: int) -> np.ndarray:
            _, ids = flat.search(z32[s : s + 1], K + 1)
            return ids[0][ids[0] != s][:K]

        got, *timing = timed(faiss_query, queries)
        add(label, got, timing, "float32")
    faiss.omp_set_num_threads(threads)

    for algorithm in ("auto", "brute"):
        if algorithm == "brute" and n > 200_000 and not with_numpy:
            continue
        nn = NearestNeighbors(n_neighbors=K + 1, metric="manhattan", algorithm=algorithm).fit(z)
        chosen = getattr(nn, "_fit_method", algorithm)

        def sk_query(s: int, nn: NearestNeighbors = nn) -> np.ndarray:
            ids = nn.kneighbors(z[s : s + 1], return_distance=False)[0]
            return ids[ids != s][:K]

        sk_queries = queries if algorithm == "auto" else queries[: min(len(queries), 200)]
        got, *timing = timed(sk_query, sk_queries)
        truth_backup = truth
        truth = [truth_backup[queries.index(s)] for s in sk_queries]
        add(f"sklearn NearestNeighbors ({algorithm} -> {chosen})", got, timing)
        truth = truth_backup
    for r in rows:
        r["index_build_s"] = build_s
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small catalogs, 200 queries")
    parser.add_argument("--queries", type=int, default=None)
    args = parser.parse_args()
    sizes = [4_470, 20_000] if args.quick else [4_470, 100_000, 1_000_000]
    n_queries = args.queries or (200 if args.quick else 1_000)
    print(f"ranking speed: k={K}, {n_queries} single queries per catalog, cpus={os.cpu_count()}")
    rows: list[dict] = []
    for n in sizes:
        rows += run_size(n, n_queries, with_numpy=True)
    print()
    print(
        "| songs | method | p50 ms | p99 ms | CPU p50 ms | CPU p99 ms | recall@30 | load | note |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['songs']:,} | {r['method']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['cpu_p50_ms']:.3f} | {r['cpu_p99_ms']:.3f} | {r['recall_at_30']:.4f} | "
            f"{r['load_average']:.1f} | {r['note']} |"
        )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ranking_speed.json").write_text(json.dumps({"k": K, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
