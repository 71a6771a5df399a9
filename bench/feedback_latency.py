"""Feedback-to-effect latency on the embedded stack (SQLite, embedded broker, local Spark).

For each probe: a recommendation for a listener through the gateway, a dislike of its first
song (POST /api/v1/feedback), and the time from that 202 until a recommendation through the
gateway no longer returns the song (polled every 20 ms). The path measured is the whole
loop: ingest -> feedback topic -> Spark feedback query -> listener tables -> listener-change
event -> the recommender's cache -> the next answer. Target: p95 < 2 s.

Run: `uv run python bench/feedback_latency.py [--probes N] [--quick]`.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from emergify_cli.stack import Stack, free_port_env
from emergify_cli.synthetic_catalog import load_songs
from emergify_cli.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def probe(api: httpx.Client, listener: str, seed: str, timeout_s: float) -> float:
    """Seconds from the dislike's 202 until the next answer lacks the disliked song."""
    body = {"seeds": [seed], "listener_id": listener, "include_recent": True, "limit": 10}
    r = api.post("/api/v1/recommendations", json=body)
    r.raise_for_status()
    target = r.json()["items"][0]["track_id"]
    r = api.post(
        "/api/v1/feedback", json={"track_id": target, "signal": "dislike", "listener_id": listener}
    )
    assert r.status_code == 202, r.text
    accepted = time.perf_counter()
    while time.perf_counter() - accepted < timeout_s:
        r = api.post("/api/v1/recommendations", json=body)
        r.raise_for_status()
        if target not in {i["track_id"] for i in r.json()["items"]}:
            return time.perf_counter() - accepted
        time.sleep(0.02)
    raise TimeoutError(f"the dislike of {target} had no effect within {timeout_s} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=40, help="dislikes to time")
    parser.add_argument("--quick", action="store_true", help="10 probes")
    parser.add_argument(
        "--database-url", default=None, help="default: SQLite in a temporary folder"
    )
    args = parser.parse_args(argv)
    probes = 10 if args.quick else args.probes
    workdir = Path(tempfile.mkdtemp(prefix="emergify-bench-feedback-"))
    key = secrets.token_urlsafe(24)
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "1000000",
            "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
        }
    )
    if args.database_url:
        env["EMERGIFY_DATABASE_URL"] = args.database_url
    log = (workdir / "stack.log").open("w")
    print(f"stack log: {log.name}", flush=True)
    stack = Stack(env=env, workdir=workdir, sink=lambda line: print(line, file=log, flush=True))
    real = load_songs(SAMPLE)
    stack.start()
    try:
        api = httpx.Client(
            base_url=stack.url("api-gateway"), headers={"X-API-Key": key}, timeout=600
        )
        with SAMPLE.open("rb") as f:
            r = api.post("/api/v1/songs/upload", files={"file": (SAMPLE.name, f, "text/csv")})
        r.raise_for_status()
        wait_for(
            lambda: api.get("/api/v1/catalog").json()["songs"] == len(real),
            timeout=600,
            what="the sample catalog",
        )
        # Warm-up: the first feedback micro-batch plans the query and warms the JVM.
        probe(api, "bench-warmup", real[0].track_id, 180)
        latencies = []
        loads = []
        for i in range(probes):
            seed = real[(i * 97 + 11) % len(real)].track_id
            latencies.append(probe(api, f"bench-{i}", seed, 120))
            loads.append(os.getloadavg()[0])
        api.close()
    finally:
        stack.stop()
    figures = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "probes": len(latencies),
        "p50_s": round(pct(latencies, 50), 3),
        "p95_s": round(pct(latencies, 95), 3),
        "max_s": round(max(latencies), 3),
        "trigger_interval_s": float(env["EMERGIFY_TRIGGER_INTERVAL_SECONDS"]),
        "load_average_1m_mean": round(sum(loads) / len(loads), 2),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
    }
    print("| probes | p50 (s) | p95 (s) | max (s) | load avg (1 min) |")
    print("|---|---|---|---|---|")
    print(
        f"| {figures['probes']} | {figures['p50_s']} | {figures['p95_s']} | {figures['max_s']} "
        f"| {figures['load_average_1m_mean']} |"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "feedback_latency.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
