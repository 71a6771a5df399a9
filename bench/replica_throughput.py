"""The gateway's recommendation throughput with one recommender replica against three.

Three real recommender processes over one catalog (the sample CSV's songs in SQLite) and two
real gateways (``python -m emergify_gateway``) in front: one given the first replica alone
(``EMERGIFY_RECOMMENDER_URL``), the other all three (``EMERGIFY_RECOMMENDER_URLS``). The
same load (``--concurrency`` requests in flight from one asyncio client, ``--requests`` per
round of ``POST /api/v1/recommendations``, a random catalog song as seed) goes to each
gateway in alternating rounds, so both configurations see the same machine. Prints
requests/s, p50/p99 latency and the load average around each round; writes
``bench/results/replica_throughput.json``.

    uv run --frozen python bench/replica_throughput.py [--requests 1500] [--rounds 2]

On a machine with few cores the replicas compete with the gateway and the client for the
same CPUs: the figure says how much a second and third process help *here*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from emergify_cli.broker import free_port
from emergify_cli.waiting import wait_for
from emergify_contracts.internal_auth import INTERNAL_TOKEN_HEADER
from emergify_contracts.tables import create_tables, make_engine, songs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from catalogs import real_songs  # noqa: E402

RESULTS = HERE / "results"


def seed(database_url: str) -> list[str]:
    """Write the sample songs as one micro-batch; return their ids."""
    now = datetime.now(UTC)
    rows = []
    for song in real_songs():
        row = song.model_dump()
        row.update(
            cluster=None,
            model_version=None,
            upload_id="bench",
            source="csv:exportify",
            ingested_at=now,
            kafka_partition=-1,
            kafka_offset=None,
            table_version=1,
            updated_at=now,
        )
        rows.append(row)
    engine = make_engine(database_url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(songs.insert(), rows)
    engine.dispose()
    return [r["track_id"] for r in rows]


class Processes:
    """Started service processes, stopped together."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self, module: str, env: dict[str, str], name: str) -> None:
        log = (self.workdir / f"{name}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, env=env, stdout=log, stderr=log, cwd=self.workdir
        )
        self.procs.append(proc)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.terminate()
        for proc in self.procs:
            await proc.wait()


def answers(url: str, headers: dict[str, str]) -> bool:
    try:
        return httpx.get(url, headers=headers, timeout=5).status_code in (200, 503)
    except httpx.HTTPError:
        return False


async def one_round(
    url: str, key: str, ids: list[str], total: int, concurrency: int
) -> dict[str, float]:
    """Send ``total`` recommendation requests, ``concurrency`` at a time."""
    latencies: list[float] = []
    failures = 0
    rng = random.Random(7)
    seeds = [rng.choice(ids) for _ in range(total)]
    queue = iter(seeds)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": key}, timeout=60, limits=limits
    ) as client:

        async def worker() -> None:
            nonlocal failures
            for seed_id in queue:
                started = time.perf_counter()
                response = await client.post(
                    "/api/v1/recommendations", json={"seeds": [seed_id], "limit": 30}
                )
                latencies.append(time.perf_counter() - started)
                if response.status_code != 200:
                    failures += 1

        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
    latencies.sort()
    return {
        "requests_per_s": total / seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "failures": failures,
        "load_1min_before": load_before,
        "load_1min_after": os.getloadavg()[0],
    }


async def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="emergify-replicas-"))
    database_url = f"sqlite:///{workdir / 'emergify.db'}"
    ids = seed(database_url)
    token = secrets.token_urlsafe(32)
    key = secrets.token_urlsafe(24)
    closed = f"http://127.0.0.1:{free_port()}"
    base = {k: v for k, v in os.environ.items() if not k.startswith("EMERGIFY_")}
    base.update(
        {
            "EMERGIFY_INTERNAL_TOKEN": token,
            "EMERGIFY_DATABASE_URL": database_url,
            # No broker: the change feed keeps retrying in the background, the catalog is
            # loaded at start, and throughput does not depend on events.
            "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "EMERGIFY_INGEST_URL": closed,
            "EMERGIFY_STREAM_PROCESSOR_URL": closed,
            "EMERGIFY_SPOTIFY_GATEWAY_URL": closed,
            "EMERGIFY_LOG_LEVEL": "WARNING",
        }
    )
    procs = Processes(workdir)
    replicas = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
    gateways = {"1 replica": f"http://127.0.0.1:{free_port()}"}
    gateways["3 replicas"] = f"http://127.0.0.1:{free_port()}"
    try:
        for n, url in enumerate(replicas, 1):
            env = {**base, "EMERGIFY_RECOMMENDER_URL": url, "EMERGIFY_REPLICA_NAME": f"r{n}"}
            await procs.start("emergify_recommender", env, f"recommender-{n}")
        for name, url in gateways.items():
            env = {
                **base,
                "EMERGIFY_GATEWAY_URL": url,
                "EMERGIFY_ADMIN_API_KEY": key,
                "EMERGIFY_RATE_LIMIT_PER_MINUTE": "0",
                "EMERGIFY_RECOMMENDER_URLS": ",".join(
                    replicas if name == "3 replicas" else replicas[:1]
                ),
            }
            await procs.start("emergify_gateway", env, f"gateway-{name.split()[0]}")
        internal = {INTERNAL_TOKEN_HEADER: token}
        for url in replicas:
            await asyncio.to_thread(
                wait_for, lambda u=url: answers(f"{u}/health", internal), 120, f"{url} up"
            )
        for url in gateways.values():
            await asyncio.to_thread(wait_for, lambda u=url: answers(f"{u}/health", {}), 60, url)
        # Warm both paths (connections, first-request imports) before measuring.
        for url in gateways.values():
            await one_round(url, key, ids, 100, args.concurrency)
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name in gateways}
        for _ in range(args.rounds):
            for name, url in gateways.items():
                rounds[name].append(await one_round(url, key, ids, args.requests, args.concurrency))
    finally:
        await procs.stop()
    return {
        "songs": len(ids),
        "requests_per_round": args.requests,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1500, help="requests per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per configuration")
    parser.add_argument("--concurrency", type=int, default=12, help="requests in flight")
    parser.add_argument("--quick", action="store_true", help="300 requests, one round")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.rounds = 300, 1
    result = asyncio.run(run(args))
    print(
        f"\n{result['songs']} songs, {result['requests_per_round']} requests per round, "
        f"{result['concurrency']} in flight, {result['cpus']} CPUs\n"
    )
    print("| replicas | round | requests/s | p50 ms | p99 ms | failures | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for name, rounds in result["rounds"].items():
        for i, r in enumerate(rounds, 1):
            print(
                f"| {name} | {i} | {r['requests_per_s']:.0f} | {r['p50_ms']:.1f} | "
                f"{r['p99_ms']:.1f} | {r['failures']:.0f} | "
                f"{r['load_1min_before']:.1f} → {r['load_1min_after']:.1f} |"
            )
    best = {name: max(r["requests_per_s"] for r in rs) for name, rs in result["rounds"].items()}
    print(f"\nbest round: {best['1 replica']:.0f} vs {best['3 replicas']:.0f} requests/s")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "replica_throughput.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
