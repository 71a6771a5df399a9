"""Issue-2 figures, measured on the embedded stack (SQLite, embedded broker, local Spark).

- upload -> published throughput (the 202 comes after the master-dataset write and the
  broker's acks=all) for the 4,470-song sample and a 100k-song synthetic file;
- freshness: seconds from the 202 to the last song of an upload visible through the API;
- recommendation latency through the gateway on the sample catalog.

Run: `make bench` (all benchmarks) or `uv run python bench/pipeline_figures.py`.
"""

from __future__ import annotations

import json
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

import httpx

from emergify_cli.stack import Stack, free_port_env
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def wait_for(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if check():
            return time.perf_counter() - start
        time.sleep(0.05)
    raise TimeoutError("benchmark condition not reached")


def upload(api: httpx.Client, path: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    with path.open("rb") as f:
        r = api.post("/api/v1/songs/upload", files={"file": (path.name, f, "text/csv")})
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return r.json(), elapsed


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="emergify-bench-"))
    key = secrets.token_urlsafe(24)
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "1000000",
        }
    )
    stack = Stack(env=env, workdir=workdir, sink=lambda line: None)
    figures: dict[str, object] = {}
    real = load_songs(SAMPLE)
    stack.start()
    try:
        api = httpx.Client(
            base_url=stack.url("api-gateway"), headers={"X-API-Key": key}, timeout=600
        )
        answer, t = upload(api, SAMPLE)
        figures["sample_upload"] = {
            "songs": answer["accepted"],
            "seconds": round(t, 3),
            "songs_per_s": round(answer["accepted"] / t),
        }
        wait_for(
            lambda: (
                (c := api.get("/api/v1/catalog").json())["songs"] == len(real)
                and c["model_version"] is not None
            ),
            600,
        )

        rng = random.Random(3)
        ids = [s.track_id for s in real]
        lat = []
        for _ in range(20):  # warm-up
            api.post("/api/v1/recommendations", json={"seeds": [rng.choice(ids)], "limit": 30})
        for _ in range(1000):
            body = {"seeds": [rng.choice(ids)], "limit": 30}
            start = time.perf_counter()
            r = api.post("/api/v1/recommendations", json=body)
            lat.append((time.perf_counter() - start) * 1000)
            r.raise_for_status()
        figures["recommendation_latency_ms"] = {
            "requests": len(lat),
            "p50": round(pct(lat, 50), 2),
            "p99": round(pct(lat, 99), 2),
        }

        fresh = []
        for i in range(12):
            batch = [s.model_dump() for s in synthetic_songs(real, 500, seed=100 + i)]
            r = api.post("/api/v1/songs", json=batch)
            r.raise_for_status()
            t0 = time.perf_counter()
            last = batch[-1]["track_id"]
            wait_for(lambda last=last: api.get(f"/api/v1/songs/{last}").status_code == 200, 120)
            fresh.append(time.perf_counter() - t0)
        figures["freshness_s"] = {
            "uploads": len(fresh),
            "songs_each": 500,
            "p50": round(pct(fresh, 50), 2),
            "p95": round(pct(fresh, 95), 2),
        }

        big = workdir / "synthetic-100k.csv"
        write_kaggle_csv(synthetic_songs(real, 100_000, seed=5), big)
        before = api.get("/api/v1/catalog").json()["songs"]
        answer, t = upload(api, big)
        figures["100k_upload"] = {
            "songs": answer["accepted"],
            "mb": round(big.stat().st_size / 1e6, 1),
            "seconds": round(t, 2),
            "songs_per_s": round(answer["accepted"] / t),
        }
        t_all = wait_for(
            lambda: api.get("/api/v1/catalog").json()["songs"] >= before + 100_000, 900
        )
        figures["100k_materialised_after_202_s"] = round(t_all, 1)
    finally:
        stack.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pipeline.json").write_text(json.dumps(figures, indent=2))
    print("\nEmergify pipeline figures (embedded stack: SQLite, embedded broker, Spark local[2])")
    for name, value in figures.items():
        print(f"  {name:<32} {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
