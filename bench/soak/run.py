"""`make soak`: the long fault and load runs, with their figures.

- **faults**: a synthetic upload (100k songs) through ingest while the stream processor is
  SIGKILLed ``--kills`` times (restarted after each); then the feature table must equal the
  accepted set exactly: same count, same ids, no duplicates, every song written by exactly
  one committed micro-batch.
- **load**: the whole stack (`emergify up`'s way, SQLite, the sample catalog loaded) and
  locust headless through the API gateway: recommendations / search / song / catalog at a
  steady ``--rate`` requests per second for ``--minutes``. Reports error rate, p50/p99 per
  endpoint and the RSS growth of every service's process group (the Spark JVM included),
  sampled after the warm-up and at the end. Targets: 0 errors, < 10% growth.

Run: `make soak` (full: 100k songs, 10 minutes) or `make soak SOAK_ARGS=--quick` (20k songs,
1 minute); `--only faults` or `--only load` runs one part. Figures are printed and written to
bench/results/soak.json (a partial run keeps the other part's figures).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from emergify_cli.stack import SERVICES, Stack, free_port_env
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv
from emergify_cli.waiting import wait_for
from emergify_contracts.tables import make_engine, songs, stream_batches

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"
LOCUSTFILE = Path(__file__).resolve().parent / "locustfile.py"
PARTS = ("faults", "load")
RSS_TARGET_PCT = 10.0


def log(message: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {message}", flush=True)


def base_env(workdir: Path, key: str) -> dict[str, str]:
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_DATABASE_URL": f"sqlite:///{workdir / 'var' / 'emergify.db'}",
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            # The soak measures the services, not the gateway's rate limiter.
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "0",
        }
    )
    return env


# ---------------------------------------------------------------------------- faults


def fault_soak(songs_n: int, kills: int) -> dict[str, Any]:
    """Upload ``songs_n`` songs through ingest; SIGKILL the stream processor ``kills`` times
    while they stream in; check the feature table against the accepted set."""
    workdir = Path(tempfile.mkdtemp(prefix="emergify-soak-faults-"))
    env = base_env(workdir, secrets.token_urlsafe(24))
    env.update(
        {
            "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
            # Many micro-batches, so each kill lands inside or between them.
            "EMERGIFY_MAX_OFFSETS_PER_TRIGGER": "5000",
            "EMERGIFY_AUTO_RETRAIN": "false",
        }
    )
    services = tuple(s for s in SERVICES if s.name in ("ingest", "stream-processor"))
    lines: list[str] = []
    stack = Stack(env=env, workdir=workdir, services=services, sink=lines.append)
    csv_path = workdir / "upload.csv"
    generated = list(synthetic_songs(load_songs(SAMPLE), songs_n, seed=606))
    write_kaggle_csv(generated, csv_path)
    engine = make_engine(env["EMERGIFY_DATABASE_URL"])

    def count() -> int:
        try:
            with engine.connect() as conn:
                return conn.execute(sa.select(sa.func.count()).select_from(songs)).scalar_one()
        except sa.exc.OperationalError:  # the tables are not created yet
            return 0

    log(f"faults: starting ingest + stream processor in {workdir}")
    stack.start()
    answer: dict[str, Any] = {}
    started = time.monotonic()
    try:

        def upload() -> None:
            with csv_path.open("rb") as f:
                r = httpx.post(
                    f"{stack.url('ingest')}/api/v1/songs/upload",
                    files={"file": (csv_path.name, f, "text/csv")},
                    timeout=1800,
                )
            answer["status"] = r.status_code
            answer["body"] = r.json()
            answer["seconds"] = round(time.monotonic() - started, 1)

        uploader = threading.Thread(target=upload)
        uploader.start()
        kill_points: list[int] = []
        restart_seconds: list[float] = []
        for n in range(kills):
            # Spread the kills: each once the table has grown past the previous one.
            floor = kill_points[-1] if kill_points else 0
            wait_for(lambda f=floor: count() > f, 900, f"songs before kill {n + 1}", 0.1)
            stack.kill("stream-processor")
            kill_points.append(count())
            log(f"faults: SIGKILL {n + 1}/{kills} with {kill_points[-1]} songs in the table")
            t0 = time.monotonic()
            stack.restart("stream-processor")
            restart_seconds.append(round(time.monotonic() - t0, 1))
        uploader.join(1800)
        if answer.get("status") != 202:
            raise RuntimeError(f"upload failed: {answer}")
        body = answer["body"]
        rejected = {r["row"] for r in body["rejected"]}
        # Ingest numbers the data rows from 1.
        accepted_ids = {s.track_id for i, s in enumerate(generated, start=1) if i not in rejected}
        accepted_songs = body["accepted"]
        wait_for(lambda: count() >= len(accepted_ids), 1800, "every accepted song", 1.0)
        status_url = f"{stack.url('stream-processor')}/admin/status"
        wait_for(
            lambda: (
                (s := httpx.get(status_url, timeout=30).json())["lag"] and s["lag"]["total"] == 0
            ),
            300,
            "lag 0",
        )
        with engine.connect() as conn:
            ids = [r[0] for r in conn.execute(sa.select(songs.c.track_id))]
            batch_rows = conn.execute(sa.select(sa.func.sum(stream_batches.c.rows))).scalar_one()
        total_seconds = round(time.monotonic() - started, 1)
    finally:
        stack.stop()
        engine.dispose()
    figures = {
        "songs_uploaded": songs_n,
        "accepted": accepted_songs,
        "accepted_distinct_ids": len(accepted_ids),
        "rejected_rows": len(rejected),
        "upload_seconds": answer["seconds"],
        "sigkills": len(kill_points),
        "songs_in_table_at_each_kill": kill_points,
        "restart_to_healthy_seconds": restart_seconds,
        "feature_table_rows": len(ids),
        "feature_table_distinct_ids": len(set(ids)),
        "rows_written_by_committed_batches": int(batch_rows or 0),
        "missing_ids": len(accepted_ids - set(ids)),
        "unexpected_ids": len(set(ids) - accepted_ids),
        "seconds_to_all_materialised": total_seconds,
    }
    figures["exact"] = (
        len(ids) == len(set(ids)) == len(accepted_ids)
        and set(ids) == accepted_ids
        and figures["rows_written_by_committed_batches"] == len(accepted_ids)
    )
    return figures


# ---------------------------------------------------------------------------- load


def group_rss_kb(pgid: int) -> int:
    """VmRSS (kB) summed over every process in process group ``pgid``."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            stat = status.read_text()
            # Fields after the command's closing parenthesis: state ppid pgrp ...
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (status.parent / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError, IndexError):  # a process ended meanwhile
            continue
    return total


def rss_by_service(stack: Stack) -> dict[str, int]:
    return {name: group_rss_kb(proc.pid) for name, proc in stack.procs.items()}


class LatencyProbe:
    """A second, independent client beside locust: one thread sending one request at a time
    (song detail and a recommendation, alternately, ``per_second`` a second) through the
    gateway with httpx, timing each with ``perf_counter``. It reports what a caller sees while
    the load runs, free of the load generator's own scheduling delays."""

    def __init__(self, host: str, key: str, ids: list[str], per_second: float = 4.0) -> None:
        self._client = httpx.Client(base_url=host, headers={"X-API-Key": key}, timeout=30)
        self._ids, self._interval = ids, 1.0 / per_second
        self._stop = threading.Event()
        self.latencies: dict[str, list[float]] = {"song": [], "recommendations": []}
        self.errors = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LatencyProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._client.close()

    def _run(self) -> None:
        i = 0
        while not self._stop.wait(self._interval):
            track_id = self._ids[(i * 7919) % len(self._ids)]
            kind = "song" if i % 2 else "recommendations"
            start = time.perf_counter()
            try:
                if kind == "song":
                    r = self._client.get(f"/api/v1/songs/{track_id}")
                else:
                    r = self._client.post(
                        "/api/v1/recommendations", json={"seeds": [track_id], "limit": 20}
                    )
                ok = r.is_success
            except httpx.HTTPError:
                ok = False
            elapsed = (time.perf_counter() - start) * 1000
            if ok:
                self.latencies[kind].append(elapsed)
            else:
                self.errors += 1
            i += 1

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            if not values:
                return None
            ordered = sorted(values)
            return round(ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))], 2)

        return {
            kind: {"requests": len(v), "p50_ms": pct(v, 50), "p99_ms": pct(v, 99)}
            for kind, v in self.latencies.items()
        } | {"errors": self.errors}


def run_locust(
    host: str, key: str, users: int, seconds: int, csv_prefix: Path
) -> list[dict[str, Any]]:
    """Locust headless at ``users`` requests per second; its per-endpoint stats rows."""
    env = {**os.environ, "EMERGIFY_SOAK_API_KEY": key, "EMERGIFY_SOAK_SAMPLE": str(SAMPLE)}
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", host, "--users", str(users), "--spawn-rate", str(users),
        "--run-time", f"{seconds}s", "--csv", str(csv_prefix), "--only-summary",
        "--stop-timeout", "10", "--loglevel", "WARNING",
    ]  # fmt: skip
    with Path(f"{csv_prefix}_locust.log").open("wb") as out:  # its own tables, kept aside
        subprocess.run(cmd, env=env, check=False, stdout=out, stderr=subprocess.STDOUT)
    with Path(f"{csv_prefix}_stats.csv").open() as f:
        return list(csv.DictReader(f))


def load_soak(minutes: float, rate: int, warmup_seconds: int) -> dict[str, Any]:
    """The whole stack under a steady mixed load through the gateway."""
    workdir = Path(tempfile.mkdtemp(prefix="emergify-soak-load-"))
    key = secrets.token_urlsafe(24)
    env = base_env(workdir, key)
    env["EMERGIFY_TRIGGER_INTERVAL_SECONDS"] = "0.5"
    lines: list[str] = []
    stack = Stack(env=env, workdir=workdir, sink=lines.append)
    log(f"load: starting the whole stack in {workdir}")
    stack.start()
    try:
        gateway = stack.url("api-gateway")
        api = httpx.Client(base_url=gateway, headers={"X-API-Key": key}, timeout=300)
        with SAMPLE.open("rb") as f:
            r = api.post("/api/v1/songs/upload", files={"file": (SAMPLE.name, f, "text/csv")})
        r.raise_for_status()
        expected = r.json()["accepted"]
        wait_for(
            lambda: (
                (c := api.get("/api/v1/catalog").json())["songs"] == expected
                and c["model_version"] is not None
            ),
            900,
            "the sample catalog and its model",
            1.0,
        )
        log(f"load: {expected} songs and a model; warm-up {warmup_seconds}s at {rate} req/s")
        run_locust(gateway, key, rate, warmup_seconds, workdir / "warmup")
        rss_start = rss_by_service(stack)
        log(f"load: measuring {minutes:g} min at {rate} req/s")
        ids = [s.track_id for s in load_songs(SAMPLE)]
        with LatencyProbe(gateway, key, ids) as probe:
            rows = run_locust(gateway, key, rate, round(minutes * 60), workdir / "load")
        rss_end = rss_by_service(stack)
        alive = {name: proc.poll() is None for name, proc in stack.procs.items()}
        api.close()
    finally:
        stack.stop()
    endpoints = {}
    total: dict[str, Any] = {}
    for row in rows:
        stats = {
            "requests": int(row["Request Count"]),
            "failures": int(row["Failure Count"]),
            "p50_ms": float(row["50%"]),
            "p99_ms": float(row["99%"]),
            "max_ms": round(float(row["Max Response Time"]), 1),
            "req_per_s": round(float(row["Requests/s"]), 2),
        }
        if row["Name"] == "Aggregated":
            total = stats
        else:
            endpoints[row["Name"]] = stats
    memory = {
        name: {
            "rss_mb_start": round(rss_start[name] / 1024, 1),
            "rss_mb_end": round(rss_end[name] / 1024, 1),
            "growth_pct": round(100 * (rss_end[name] - rss_start[name]) / rss_start[name], 2)
            if rss_start[name]
            else None,
        }
        for name in rss_start
    }
    requests = total.get("requests", 0)
    return {
        "minutes": minutes,
        "target_rate_req_per_s": rate,
        "warmup_seconds": warmup_seconds,
        "requests": requests,
        "failures": total.get("failures", 0),
        "error_rate": round(total.get("failures", 0) / requests, 6) if requests else None,
        "achieved_req_per_s": total.get("req_per_s"),
        "p50_ms": total.get("p50_ms"),
        "p99_ms": total.get("p99_ms"),
        "endpoints": endpoints,
        # The same minutes seen by an independent sequential client (see LatencyProbe).
        "probe": probe.summary(),
        "memory": memory,
        "services_alive_at_end": alive,
        "targets_met": bool(
            requests
            and total.get("failures", 0) == 0
            and probe.errors == 0
            and all(
                m["growth_pct"] is not None and m["growth_pct"] < RSS_TARGET_PCT
                for m in memory.values()
            )
        ),
    }


# ---------------------------------------------------------------------------- report


def print_report(figures: dict[str, Any]) -> None:
    if faults := figures.get("faults"):
        print("\nFault soak: upload through ingest, stream processor SIGKILLed mid-stream")
        for name, value in faults.items():
            print(f"  {name:<36} {value}")
    if load := figures.get("load"):
        print(
            f"\nLoad soak: {load['minutes']:g} min at {load['target_rate_req_per_s']} req/s "
            f"through the gateway (achieved {load['achieved_req_per_s']} req/s)"
        )
        print(f"  {'endpoint':<32} {'requests':>9} {'errors':>7} {'p50 ms':>8} {'p99 ms':>8}")
        for name, s in load["endpoints"].items():
            print(
                f"  {name:<32} {s['requests']:>9} {s['failures']:>7} "
                f"{s['p50_ms']:>8g} {s['p99_ms']:>8g}"
            )
        print(
            f"  {'all':<32} {load['requests']:>9} {load['failures']:>7} "
            f"{load['p50_ms']:>8g} {load['p99_ms']:>8g}   error rate {load['error_rate']}"
        )
        if probe := load.get("probe"):
            print("  independent sequential probe through the gateway during the same minutes:")
            for kind in ("recommendations", "song"):
                p = probe[kind]
                print(
                    f"    {kind:<30} {p['requests']:>9} {probe['errors']:>7} "
                    f"{p['p50_ms']!s:>8} {p['p99_ms']!s:>8}"
                )
        header = f"{'service (process group RSS)':<32} {'start MB':>9} {'end MB':>9}"
        print(f"\n  {header} {'growth':>8}")
        for name, m in load["memory"].items():
            print(f"  {name:<32} {m['rss_mb_start']:>9} {m['rss_mb_end']:>9} {m['growth_pct']:>7}%")
        print(f"  targets met (0 errors, < {RSS_TARGET_PCT:g}% growth): {load['targets_met']}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k songs, 1 minute of load")
    parser.add_argument("--only", default=",".join(PARTS), help="faults, load or both")
    parser.add_argument("--minutes", type=float, help="load duration (default 10; quick 1)")
    parser.add_argument("--rate", type=int, default=30, help="load: requests per second")
    parser.add_argument("--songs", type=int, help="faults: songs uploaded (default 100k)")
    parser.add_argument("--kills", type=int, default=3, help="faults: SIGKILLs")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    if unknown := parts - set(PARTS):
        parser.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    minutes = args.minutes or (1.0 if args.quick else 10.0)
    songs_n = args.songs or (20_000 if args.quick else 100_000)
    figures: dict[str, Any] = {}
    if "faults" in parts:
        figures["faults"] = fault_soak(songs_n, args.kills)
    if "load" in parts:
        figures["load"] = load_soak(minutes, args.rate, 15 if args.quick else 60)
    RESULTS.mkdir(exist_ok=True)
    name = "soak_quick.json" if args.quick else "soak.json"
    out = RESULTS / name
    previous = json.loads(out.read_text()) if out.exists() else {}
    out.write_text(json.dumps({**previous, **figures}, indent=2) + "\n")
    print_report(figures)
    print(f"\nwritten to {out.relative_to(REPO)}")
    ok = figures.get("faults", {}).get("exact", True) and figures.get("load", {}).get(
        "targets_met", True
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
