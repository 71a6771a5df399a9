"""Upload throughput through the gateway: a 100k-row CSV read by pyarrow and validated with
Arrow kernels (``EMERGIFY_CSV_VALIDATION=arrow``, the default) against the previous path (the
``csv`` module's reader, validated a block at a time: ``columns``) and, on request, the per-row
path (``rows``), in the same run.

Starts the embedded broker, the ingest service and the API gateway only (an upload's 202
comes once every accepted song is in the master dataset and acknowledged by the broker; the
stream processor is not on that path). Each mode gets a fresh stack and ``--uploads`` uploads
of the same file (new uploads of the same ids: each is validated, written and published in
full). Prints songs/s per upload, and the CPU seconds the ingest service, the gateway and the
broker spent per upload (the machine is shared: CPU time says what wall time cannot), and
writes ``bench/results/ingest_throughput.json``.

    uv run --frozen python bench/ingest_throughput.py [--rows 100000] [--uploads 3] \
        [--modes arrow,columns,rows]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import httpx
import psutil

from emergify_cli.stack import SERVICES, Stack, free_port_env
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv
from emergify_contracts.internal_auth import internal_headers

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"
MODES = ("arrow", "columns")


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds used so far by each process (and its children)."""
    out = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
            out[name] = sum(p.cpu_times().user + p.cpu_times().system for p in procs)
        except psutil.NoSuchProcess:
            out[name] = float("nan")
    return out


def run_mode(mode: str, csv_path: Path, uploads: int) -> tuple[list[float], list[dict[str, float]]]:
    """Songs/s and CPU seconds (per process) of each upload of ``csv_path`` to a fresh stack
    validating by ``mode``."""
    workdir = Path(tempfile.mkdtemp(prefix=f"emergify-ingest-{mode}-"))
    key = secrets.token_urlsafe(24)
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "1000000",
            "EMERGIFY_CSV_VALIDATION": mode,
        }
    )
    # The gateway's /health is 200 only when every service is up; its Swagger page says it
    # serves, which is all an upload needs besides the ingest service.
    services = tuple(
        replace(s, health_path="/docs") if s.name == "api-gateway" else s
        for s in SERVICES
        if s.name in ("ingest", "api-gateway")
    )
    stack = Stack(env=env, workdir=workdir, sink=lambda line: None, services=services)
    stack.start()
    rates: list[float] = []
    cpu: list[dict[str, float]] = []
    pids = {name: proc.pid for name, proc in stack.procs.items()}
    if stack.broker is not None and stack.broker.proc is not None:
        pids["broker"] = stack.broker.proc.pid
    try:
        api = httpx.Client(
            base_url=stack.url("api-gateway"), headers={"X-API-Key": key}, timeout=600
        )
        for _ in range(uploads):
            with csv_path.open("rb") as fh:
                cpu_before = _cpu_seconds(pids)
                start = time.perf_counter()
                r = api.post(
                    "/api/v1/songs/upload", files={"file": (csv_path.name, fh, "text/csv")}
                )
                seconds = time.perf_counter() - start
                cpu_after = _cpu_seconds(pids)
            r.raise_for_status()
            accepted = r.json()["accepted"]
            rates.append(accepted / seconds)
            cpu.append({k: round(cpu_after[k] - cpu_before[k], 2) for k in pids})
            used = " ".join(f"{k} {v:.2f}" for k, v in cpu[-1].items())
            print(
                f"{mode:<8} {accepted} songs in {seconds:.2f} s: {rates[-1]:,.0f} songs/s; "
                f"CPU s: {used}; load {os.getloadavg()[0]:.1f}"
            )
        # One more upload straight to the ingest service: the gateway's share of the time.
        direct = httpx.Client(
            base_url=stack.url("ingest"), headers=internal_headers(stack.settings), timeout=600
        )
        with csv_path.open("rb") as fh:
            start = time.perf_counter()
            r = direct.post("/api/v1/songs/upload", files={"file": (csv_path.name, fh, "text/csv")})
            seconds = time.perf_counter() - start
        r.raise_for_status()
        print(f"{mode:<8} straight to ingest: {r.json()['accepted'] / seconds:,.0f} songs/s")
    finally:
        stack.stop()
    return rates, cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--uploads", type=int, default=3)
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated: arrow,columns,rows"
    )
    args = parser.parse_args(argv)
    csv_path = Path(tempfile.mkdtemp(prefix="emergify-bench-")) / "synthetic.csv"
    write_kaggle_csv(synthetic_songs(load_songs(SAMPLE), args.rows, seed=5), csv_path)
    figures: dict[str, object] = {
        "csv_rows": args.rows,
        "mb": round(csv_path.stat().st_size / 1e6, 1),
        "load_average_before": round(os.getloadavg()[0], 2),
    }
    for mode in args.modes.split(","):
        rates, cpu = run_mode(mode, csv_path, args.uploads)
        figures[mode] = {
            "songs_per_s_median": round(statistics.median(rates)),
            "songs_per_s_each": [round(r) for r in rates],
            "cpu_s_per_100k_songs_median": {
                k: round(statistics.median(c[k] for c in cpu) * 100_000 / args.rows, 2)
                for k in cpu[0]
            },
        }
    figures["load_average"] = round(os.getloadavg()[0], 2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest_throughput.json").write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
