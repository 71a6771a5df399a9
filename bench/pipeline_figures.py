"""Pipeline figures, measured on the embedded stack (SQLite, embedded broker, local Spark).

- upload -> published throughput (the 202 comes after the master-dataset write and the
  broker's acks=all) for the 4,470-song sample and a 100k-song synthetic file;
- freshness: seconds from the 202 to the last song of an upload visible through the API;
- recommendation latency through the gateway on the sample catalog.

Run: `make bench` (all benchmarks) or `uv run python bench/pipeline_figures.py`;
`--only freshness` (or `upload`, `latency`, `100k`, comma-separated) runs just those parts.
The freshness part also splits each upload's time into stages, from the feature table's
``updated_at`` (when the stream processor's micro-batch committed the song):
202 -> committed (Kafka, micro-batch planning, read, upsert) and committed -> visible
(catalog-change event, the recommender's index, the gateway).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from emergify_cli.stack import Stack, free_port_env
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv
from emergify_cli.waiting import wait_for

PARTS = ("upload", "latency", "freshness", "100k")
REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def seconds_until(check, timeout: float) -> float:  # type: ignore[no-untyped-def]
    """Seconds until ``check`` holds, polled finely enough for the freshness figures."""
    start = time.perf_counter()
    wait_for(check, timeout, "the benchmark's condition", interval=0.05)
    return time.perf_counter() - start


def upload(api: httpx.Client, path: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    with path.open("rb") as f:
        r = api.post("/api/v1/songs/upload", files={"file": (path.name, f, "text/csv")})
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return r.json(), elapsed


def committed_at(db: sa.Engine, track_id: str) -> float | None:
    """When the feature table's row for ``track_id`` was last written (epoch seconds)."""
    with db.connect() as conn:
        value = conn.execute(
            sa.text("SELECT updated_at FROM songs WHERE track_id = :id"), {"id": track_id}
        ).scalar()
    if value is None:
        return None
    if isinstance(value, str):  # SQLite keeps timestamps as text
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:  # stored in UTC
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def freshness(api: httpx.Client, real: list, workdir: Path, uploads: int) -> dict[str, object]:
    """Upload ``uploads`` batches of 500 new songs; time 202 -> last song visible via the API,
    split at the moment the feature table committed it."""
    db = sa.create_engine(f"sqlite:///{workdir / 'var' / 'emergify.db'}")
    fresh, to_commit, to_visible = [], [], []
    for i in range(uploads):
        time.sleep(random.Random(i).uniform(0.0, 1.0))  # land anywhere in a trigger interval
        batch = [s.model_dump() for s in synthetic_songs(real, 500, seed=100 + i)]
        r = api.post("/api/v1/songs", json=batch)
        r.raise_for_status()
        t0, wall0 = time.perf_counter(), time.time()
        last = batch[-1]["track_id"]
        seconds_until(lambda last=last: api.get(f"/api/v1/songs/{last}").status_code == 200, 120)
        fresh.append(time.perf_counter() - t0)
        committed = committed_at(db, last)
        if committed is not None:
            to_commit.append(committed - wall0)
            to_visible.append(wall0 + fresh[-1] - committed)
    db.dispose()
    figures: dict[str, object] = {
        "freshness_s": {
            "uploads": len(fresh),
            "songs_each": 500,
            "p50": round(pct(fresh, 50), 2),
            "p95": round(pct(fresh, 95), 2),
        }
    }
    if to_commit:
        figures["freshness_stages_s"] = {
            "202_to_committed_p50": round(pct(to_commit, 50), 2),
            "202_to_committed_p95": round(pct(to_commit, 95), 2),
            "committed_to_visible_p50": round(pct(to_visible, 50), 2),
            "committed_to_visible_p95": round(pct(to_visible, 95), 2),
        }
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts to run, of {', '.join(PARTS)} (default: all)",
    )
    parser.add_argument("--uploads", type=int, default=12, help="freshness: uploads to time")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := parts - set(PARTS):
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
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
        if "upload" in parts:
            figures["sample_upload"] = {
                "songs": answer["accepted"],
                "seconds": round(t, 3),
                "songs_per_s": round(answer["accepted"] / t),
            }
        seconds_until(
            lambda: (
                (c := api.get("/api/v1/catalog").json())["songs"] == len(real)
                and c["model_version"] is not None
            ),
            600,
        )

        if "latency" in parts:
            ids = [s.track_id for s in real]
            # The same 1,000 requests through the gateway and straight to the recommender:
            # the difference is what the gateway's hop (auth, rate limit, proxy) costs.
            direct = httpx.Client(base_url=stack.url("recommender"), timeout=600)
            for name, client in (
                ("recommendation_latency_ms", api),
                ("recommender_direct_ms", direct),
            ):
                rng = random.Random(3)
                lat = []
                for _ in range(20):  # warm-up
                    client.post(
                        "/api/v1/recommendations", json={"seeds": [rng.choice(ids)], "limit": 30}
                    )
                for _ in range(1000):
                    body = {"seeds": [rng.choice(ids)], "limit": 30}
                    start = time.perf_counter()
                    r = client.post("/api/v1/recommendations", json=body)
                    lat.append((time.perf_counter() - start) * 1000)
                    r.raise_for_status()
                figures[name] = {
                    "requests": len(lat),
                    "p50": round(pct(lat, 50), 2),
                    "p99": round(pct(lat, 99), 2),
                    "load_average": round(os.getloadavg()[0], 2),
                }
            direct.close()

        if "freshness" in parts:
            figures.update(freshness(api, real, workdir, args.uploads))

        if "100k" in parts:
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
            t_all = seconds_until(
                lambda: api.get("/api/v1/catalog").json()["songs"] >= before + 100_000, 900
            )
            figures["100k_materialised_after_202_s"] = round(t_all, 1)
    finally:
        stack.stop()
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "pipeline.json"
    # A partial run updates its own figures and keeps the others.
    previous = json.loads(out.read_text()) if out.exists() and parts != set(PARTS) else {}
    out.write_text(json.dumps({**previous, **figures}, indent=2))
    print("\nEmergify pipeline figures (embedded stack: SQLite, embedded broker, Spark local[2])")
    for name, value in figures.items():
        print(f"  {name:<32} {value}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
