"""Ten million songs end to end (issue 14, item 3), on the embedded stack.

    uv run python bench/scale_end_to_end.py                    # 10M songs (about an hour)
    uv run python bench/scale_end_to_end.py --songs 200000     # a validation run
    uv run python bench/scale_end_to_end.py --database postgresql --shape bootstrap30

1. Generates the catalog in Kaggle-layout CSV parts under the upload limit, streamed to
   disk one part at a time (bench/catalogs.py's shapes; the 4,470 real songs first).
2. Starts the whole stack (emergify_cli.stack.Stack: embedded broker, every service, Spark
   local[2]) and uploads every part through the API gateway, a few at a time, recording
   each 202.
3. Waits until the feature table holds every accepted song (counted in the database, not
   through the API): seconds after the last 202, and the speed layer's songs/s.
4. Requests a retrain through the gateway (admin key) and times it until the published
   model covers every song (the stream processor's own stage timings come from its log).
5. The recommender: RSS of its process group once loaded; cold load (SIGTERM, start again,
   time until /health reports the full catalog and the current model); recommendation
   latency p50/p99 through the gateway.
6. Prints every figure with its target (the targets are the 10M ones of issue 14) and writes
   bench/results/scale_<N>.json with the load average at each stage and the commit.

Every service's log goes to <workdir>/stack.log (JSON lines); ``--keep`` keeps the workdir
(and the PostgreSQL database) for a look afterwards.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
import sqlalchemy as sa

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "tests"))

from catalogs import _UNIT, SHAPES, _extra_features, real_songs  # noqa: E402

from emergify_cli.stack import SERVICES, Stack, free_port_env  # noqa: E402
from emergify_cli.synthetic_catalog import KAGGLE_HEADER  # noqa: E402
from emergify_cli.waiting import wait_for  # noqa: E402
from emergify_contracts.internal_auth import internal_headers  # noqa: E402
from emergify_contracts.song import AUDIO_FEATURES, Song  # noqa: E402
from emergify_stream.config import Settings as StreamSettings  # noqa: E402

#: The gateway's and the ingest's default ``max_upload_bytes``; a part leaves room for the
#: multipart envelope.
UPLOAD_LIMIT = 50 * 1024 * 1024
MULTIPART_SLACK = 64 * 1024

#: Issue 14's targets for 10M songs on a 2-core machine.
TARGETS = {
    "recommender_rss_gb": 2.5,
    "recommender_cold_load_s": 60.0,
    "batch_retrain_s": 300.0,
    "materialised_after_last_202_s": 1200.0,
}

_LO = np.array([-60.0 if f == "loudness" else 0.0 for f in AUDIO_FEATURES])
_HI = np.array(
    [1.0 if f in _UNIT else (5.0 if f == "loudness" else np.inf) for f in AUDIO_FEATURES]
)
_BASE62 = np.frombuffer(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", np.uint8)


def load() -> dict[str, Any]:
    """The machine's load average now, and ``uptime``'s line."""
    one, five, fifteen = os.getloadavg()
    line = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {
        "load_1m": round(one, 2),
        "load_5m": round(five, 2),
        "load_15m": round(fifteen, 2),
        "uptime": line,
    }


def commit() -> str:
    head = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return f"{head}{'+dirty' if dirty else ''}"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# --- 1. the catalog, in CSV parts ---------------------------------------------------------


def _real_row(s: Song) -> list[object]:
    return [
        s.track_id,
        s.name,
        s.popularity,
        s.duration_ms,
        int(bool(s.explicit)),
        repr(list(s.artists)),
        repr(list(s.artist_ids)),
        s.release_date or "",
        *(getattr(s, f) for f in AUDIO_FEATURES),
        s.key,
        s.mode,
        s.time_signature,
    ]


def _synthetic_rows(
    real: list[Song],
    pool: list[str],
    first_row: int,
    count: int,
    shape: str,
    rng: np.random.Generator,
) -> tuple[Iterator[list[object]], np.ndarray]:
    """``count`` synthetic rows (numbered from ``first_row``) of ``shape``, vectorized like
    bench/catalogs.py: features from the shape, clipped and rounded; artists drawn from the
    real pool (85% one, else two); the bootstrapped song's name, album data and key."""
    x = np.array([s.features() for s in real], dtype=np.float64)
    base = rng.integers(0, len(real), size=count)
    features = np.round(np.clip(_extra_features(x, base, shape, rng), _LO, _HI), 6).tolist()
    ids = _BASE62[rng.integers(0, 62, size=(count, 22))].view("S22").reshape(count)
    popularity = np.minimum(100, rng.exponential(8.0, size=count).astype(int)).tolist()
    first = rng.integers(0, len(pool), size=count).tolist()
    second = rng.integers(0, len(pool), size=count).tolist()
    two = (rng.random(count) >= 0.85).tolist()

    def rows() -> Iterator[list[object]]:
        for j in range(count):
            b = real[int(base[j])]
            artists = [pool[first[j]]]
            if two[j] and first[j] != second[j]:
                artists.append(pool[second[j]])
            yield [
                ids[j].decode(),
                f"{b.name} (synthetic {first_row + j})",
                popularity[j],
                b.duration_ms,
                int(bool(b.explicit)),
                repr(artists),
                "[]",
                b.release_date or "",
                *features[j],
                b.key,
                b.mode,
                b.time_signature,
            ]

    return rows(), ids


def write_parts(
    n: int, part_rows: int, shape: str, out: Path, seed: int = 7, sample_per_part: int = 50
) -> tuple[list[Path], list[str]]:
    """Write ``n`` songs as CSV parts of at most ``part_rows`` rows; return the parts and a
    sample of track ids (latency seeds). Only one part's arrays are in memory at a time."""
    real = real_songs()
    pool = [a for s in real for a in s.artists]
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    parts, sample = [], []
    for index, start in enumerate(range(0, n, part_rows)):
        count = min(part_rows, n - start)
        real_here = real[start : min(start + count, len(real))]
        rows, ids = _synthetic_rows(
            real, pool, start + len(real_here), count - len(real_here), shape, rng
        )
        path = out / f"part-{index:05d}.csv"
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(KAGGLE_HEADER)
            w.writerows(_real_row(s) for s in real_here)
            w.writerows(rows)
        size = path.stat().st_size
        if size > UPLOAD_LIMIT - MULTIPART_SLACK:
            raise SystemExit(
                f"{path.name} is {size / 2**20:.1f} MiB, over the {UPLOAD_LIMIT / 2**20:.0f} MiB "
                f"upload limit: lower --part-rows (now {part_rows})"
            )
        parts.append(path)
        picks = (
            rng.choice(ids.size, size=min(sample_per_part, ids.size), replace=False)
            if ids.size
            else []
        )
        sample.extend(ids[i].decode() for i in picks)
        sample.extend(s.track_id for s in real_here[:sample_per_part])
    return parts, sample


# --- 2. uploads -------------------------------------------------------------------------


@dataclass
class Upload:
    part: str
    accepted: int
    rejected: int
    seconds: float
    at: float  # perf_counter at the 202


def upload_all(api: httpx.Client, parts: list[Path], concurrency: int) -> list[Upload]:
    def one(path: Path) -> Upload:
        started = time.perf_counter()
        with path.open("rb") as f:
            r = api.post("/api/v1/songs/upload", files={"file": (path.name, f, "text/csv")})
        at = time.perf_counter()
        if r.status_code != 202:
            raise RuntimeError(f"{path.name}: {r.status_code} {r.text[:500]}")
        body = r.json()
        return Upload(path.name, body["accepted"], len(body["rejected"]), at - started, at)

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, parts))


# --- the recommender's process group ------------------------------------------------------


def group_memory(pgid: int) -> tuple[float, float]:
    """(RSS now, sum of each process's peak RSS) of a process group, in MiB."""
    rss = peak = 0.0
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) != pgid:
                continue
            rss += p.memory_info().rss
            with open(f"/proc/{p.pid}/status") as f:
                hwm = next((line for line in f if line.startswith("VmHWM:")), "VmHWM: 0 kB")
            peak += int(hwm.split()[1]) * 1024
        except (ProcessLookupError, psutil.NoSuchProcess, FileNotFoundError, PermissionError):
            continue
    return rss / 2**20, peak / 2**20


def stack_log_events(log_path: Path, event: str) -> list[dict[str, Any]]:
    """The JSON log records of ``event`` in the stack's log."""
    out = []
    with log_path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            _, _, payload = line.partition(" | ")
            if event not in payload:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(payload)
                if record.get("event") == event:
                    out.append(record)
    return out


# --- the run ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--songs", type=int, default=10_000_000)
    parser.add_argument(
        "--part-rows", type=int, default=200_000, help="rows per CSV part (~37 MiB at 200k)"
    )
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--shape", choices=SHAPES, default="marginals")
    parser.add_argument("--concurrency", type=int, default=3, help="uploads in flight at once")
    parser.add_argument("--requests", type=int, default=200, help="recommendations to time")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=900.0,
        help="seconds each service may take to become healthy (Spark starts slowly under load)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the workdir and database")
    parser.add_argument(
        "--quick", action="store_true", help="200,000 songs in parts of 50,000 (a validation run)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.songs, args.part_rows = 200_000, 50_000
    # Stopped by a signal (even when started in the background, which ignores SIGINT): still
    # stop the stack and write the figures measured so far.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    figures: dict[str, Any] = {
        "songs_requested": args.songs,
        "part_rows": args.part_rows,
        "database": args.database,
        "shape": args.shape,
        "upload_concurrency": args.concurrency,
        "commit": commit(),
        "cpus": os.cpu_count(),
        "load": {},
        "stages_s": {},
    }
    stages: dict[str, float] = figures["stages_s"]
    loads: dict[str, Any] = figures["load"]
    loads["start"] = load()
    workdir = Path(tempfile.mkdtemp(prefix="emergify-scale-"))
    print(f"workdir {workdir}", flush=True)

    t = time.perf_counter()
    parts, sample_ids = write_parts(args.songs, args.part_rows, args.shape, workdir / "parts")
    stages["generate_csv"] = round(time.perf_counter() - t, 1)
    figures["parts"] = len(parts)
    figures["csv_mib"] = round(sum(p.stat().st_size for p in parts) / 2**20, 1)
    loads["generated"] = load()
    print(
        f"generated {len(parts)} parts, {figures['csv_mib']} MiB in {stages['generate_csv']} s",
        flush=True,
    )

    key = secrets.token_urlsafe(24)
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_FORMAT": "json",
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "1000000",
        }
    )
    if args.songs > 2_000_000 and "EMERGIFY_SPARK_DRIVER_MEMORY" not in os.environ:
        # The batch layer caches the latest version of every song in the driver (local[2]):
        # the default 2g heap is too small past a few million songs.
        env["EMERGIFY_SPARK_DRIVER_MEMORY"] = "6g"
    figures["spark_driver_memory"] = env.get(
        "EMERGIFY_SPARK_DRIVER_MEMORY", os.environ.get("EMERGIFY_SPARK_DRIVER_MEMORY", "2g")
    )
    pg_name = None
    if args.database == "postgresql":
        from testkit import drop_pg_database, new_pg_database

        pg_name, db_url = new_pg_database("emergify_scale")
        env["EMERGIFY_DATABASE_URL"] = db_url
        figures["database_url"] = db_url
    else:
        db_url = f"sqlite:///{workdir / 'var' / 'emergify.db'}"
    log_path = workdir / "stack.log"
    # Line-buffered: the run reads this log back (micro-batches, model timings) while the
    # services still write to it.
    log_file = log_path.open("a", encoding="utf-8", buffering=1)
    log_lock = threading.Lock()

    def sink(line: str) -> None:
        with log_lock:
            log_file.write(line + "\n")

    services = tuple(
        replace(spec, start_timeout=max(spec.start_timeout, args.start_timeout))
        for spec in SERVICES
    )
    stack = Stack(env=env, workdir=workdir, services=services, sink=sink)
    db = sa.create_engine(db_url)
    try:
        t = time.perf_counter()
        stack.start()
        stages["start_stack"] = round(time.perf_counter() - t, 1)
        loads["stack_started"] = load()
        run(args, stack, key, db, parts, sample_ids, figures, log_path)
    except BaseException as exc:
        figures["error"] = f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        db.dispose()
        stack.stop()
        log_file.close()
        report(figures)
        RESULTS.mkdir(exist_ok=True)
        out = RESULTS / f"scale_{args.songs}.json"
        out.write_text(json.dumps(figures, indent=2))
        print(f"\nresults: {out}\nstack log: {log_path}", flush=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
            if pg_name:
                drop_pg_database(pg_name)


def run(
    args: argparse.Namespace,
    stack: Stack,
    key: str,
    db: sa.Engine,
    parts: list[Path],
    sample_ids: list[str],
    figures: dict[str, Any],
    log_path: Path,
) -> None:
    stages: dict[str, float] = figures["stages_s"]
    loads: dict[str, Any] = figures["load"]
    api = httpx.Client(base_url=stack.url("api-gateway"), headers={"X-API-Key": key}, timeout=900)
    internal = internal_headers(stack.settings)
    stream = httpx.Client(base_url=stack.url("stream-processor"), headers=internal, timeout=60)
    recommender = httpx.Client(base_url=stack.url("recommender"), headers=internal, timeout=60)

    def count() -> int:
        with db.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM songs")).scalar_one())

    before = count()

    # 2. uploads
    t0 = time.perf_counter()
    uploads = upload_all(api, parts, args.concurrency)
    last_202 = max(u.at for u in uploads)
    accepted = sum(u.accepted for u in uploads)
    expected = before + accepted
    stages["upload_all_parts"] = round(last_202 - t0, 1)
    figures["upload"] = {
        "accepted": accepted,
        "rejected": sum(u.rejected for u in uploads),
        "songs_per_s": round(accepted / (last_202 - t0)),
        "seconds_per_part_p50": round(pct([u.seconds for u in uploads], 50), 2),
        "seconds_per_part_max": round(max(u.seconds for u in uploads), 2),
        "202s_s_after_start": [round(u.at - t0, 2) for u in uploads],
    }
    loads["uploaded"] = load()
    print(f"uploaded {accepted} songs in {stages['upload_all_parts']} s", flush=True)

    # 3. the feature table holds every accepted song
    samples: list[tuple[float, int]] = []

    def materialised() -> bool:
        n = count()
        samples.append((time.perf_counter(), n))
        return n >= expected

    wait_for(materialised, max(1800.0, args.songs / 500), "every song in the feature table", 2.0)
    done = samples[-1][0]
    after_last = done - last_202
    stages["materialise_after_last_202"] = round(after_last, 1)

    def at_fraction(f: float) -> tuple[float, int]:
        return next(s for s in samples if s[1] - before >= f * accepted)

    (t10, c10), (t90, c90) = at_fraction(0.1), at_fraction(0.9)
    figures["speed_layer"] = {
        "materialised_after_last_202_s": round(after_last, 1),
        "songs_in_table_at_last_202": next(
            (n for tt, n in samples if tt >= last_202), samples[0][1]
        )
        - before,
        "songs_per_s_first_202_to_done": round(accepted / (done - min(u.at for u in uploads))),
        "songs_per_s_10_to_90_pct": round((c90 - c10) / (t90 - t10)) if t90 > t10 else None,
        "max_offsets_per_trigger": int(
            stack.env.get("EMERGIFY_MAX_OFFSETS_PER_TRIGGER")
            or os.environ.get("EMERGIFY_MAX_OFFSETS_PER_TRIGGER")
            or StreamSettings.model_fields["max_offsets_per_trigger"].default
        ),
    }
    batches = [r for r in stack_log_events(log_path, "micro-batch committed") if r.get("rows")]
    if batches:
        rows = [int(r["rows"]) for r in batches]
        figures["speed_layer"]["micro_batches"] = len(rows)
        figures["speed_layer"]["rows_per_batch_mean"] = round(sum(rows) / len(rows))
        figures["speed_layer"]["rows_per_batch_max"] = max(rows)
    loads["materialised"] = load()
    print(f"materialised {expected} songs {after_last:.1f} s after the last 202", flush=True)

    # the recommender serves them all (change events; no restart)
    t = time.perf_counter()
    wait_for(
        lambda: recommender.get("/health").json().get("songs", 0) >= expected,
        1800,
        "the recommender to hold every song",
        1.0,
    )
    stages["recommender_catches_up_after_materialised"] = round(time.perf_counter() - t, 1)

    # 4. retrain: wait for any automatic run to end, then request one and time it
    t = time.perf_counter()
    wait_for(
        lambda: (
            not (s := stream.get("/admin/status").json())["training"] and not s["training_queued"]
        ),
        3600,
        "automatic training runs to end",
        2.0,
    )
    stages["wait_for_automatic_training"] = round(time.perf_counter() - t, 1)
    previous = (stream.get("/admin/status").json().get("model") or {}).get("version", 0)
    loads["before_retrain"] = load()
    t = time.perf_counter()
    r = api.post("/api/v1/model/retrain")
    r.raise_for_status()

    def covered() -> bool:
        m = api.get("/api/v1/model")
        return (
            m.status_code == 200
            and m.json()["version"] > previous
            and m.json()["songs"] >= expected
        )

    wait_for(covered, 3600, "a model covering every song", 1.0)
    retrain_s = time.perf_counter() - t
    model = api.get("/api/v1/model").json()
    stages["batch_retrain"] = round(retrain_s, 1)
    published = [
        r
        for r in stack_log_events(log_path, "model published")
        if r.get("version") == model["version"]
    ]
    figures["retrain"] = {
        "seconds": round(retrain_s, 1),
        "request": r.json().get("status"),
        "model_version": model["version"],
        "k": model.get("k"),
        "songs": model.get("songs"),
        "stream_processor_timings_s": published[0].get("timings") if published else None,
    }
    loads["retrained"] = load()
    print(f"retrained in {retrain_s:.1f} s (model {model['version']})", flush=True)

    def serving_model() -> bool:
        h = recommender.get("/health").json()
        return h.get("model_version") == model["version"] and h.get("songs", 0) >= expected

    t = time.perf_counter()
    wait_for(serving_model, 1800, "the recommender to serve the new model", 0.5)
    stages["recommender_takes_new_model"] = round(time.perf_counter() - t, 1)

    # 5. the recommender: memory, latency, cold load
    pgid = stack.procs["recommender"].pid
    time.sleep(3)  # let the swap's temporaries go
    rss, peak = group_memory(pgid)
    rec: dict[str, Any] = {"rss_mib_loaded": round(rss), "peak_rss_mib_since_start": round(peak)}
    figures["recommender"] = rec
    rng = random.Random(3)
    seeds = [rng.choice(sample_ids) for _ in range(args.requests + 20)]
    latencies = []
    for i, seed in enumerate(seeds):
        started = time.perf_counter()
        answer = api.post("/api/v1/recommendations", json={"seeds": [seed], "limit": 30})
        elapsed = (time.perf_counter() - started) * 1000
        answer.raise_for_status()
        if i >= 20:  # the first 20 warm up
            latencies.append(elapsed)
    rec["latency_ms"] = {
        "requests": len(latencies),
        "p50": round(pct(latencies, 50), 2),
        "p99": round(pct(latencies, 99), 2),
        "load": load(),
    }
    loads["latency"] = rec["latency_ms"]["load"]

    spec = next(s for s in stack.services if s.name == "recommender")
    proc = stack.procs["recommender"]
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(60)
    loads["before_cold_load"] = load()
    started = time.perf_counter()
    stack.start_service(spec)
    pgid = stack.procs["recommender"].pid
    peak_during = 0.0

    def loaded() -> bool:
        nonlocal peak_during
        peak_during = max(peak_during, group_memory(pgid)[0])
        with contextlib.suppress(httpx.HTTPError, ValueError):
            return serving_model()
        return False

    wait_for(loaded, 1800, "the restarted recommender to load the catalog", 0.25)
    cold = time.perf_counter() - started
    time.sleep(3)
    rss_after, peak_after = group_memory(pgid)
    refreshed = [
        r
        for r in stack_log_events(log_path, "catalog refreshed")
        if r.get("songs", 0) >= expected and r.get("model_version") == model["version"]
    ]
    # The index saved after the retrain's full load (the service's default path, under the
    # stack's working directory) is what a restart reads back; else it rebuilds.
    snapshot_reads = stack_log_events(log_path, "index snapshot read")
    snapshot_skips = stack_log_events(log_path, "index snapshot not used")
    rec.update(
        {
            "cold_load_s": round(cold, 1),
            "cold_load_from": "snapshot" if snapshot_reads else "full build",
            "snapshot_read_s": snapshot_reads[-1].get("seconds") if snapshot_reads else None,
            "snapshot_not_used": snapshot_skips[-1].get("reason") if snapshot_skips else None,
            "cold_load_index_build_s": refreshed[-1].get("seconds") if refreshed else None,
            "rss_mib_after_cold_load": round(rss_after),
            "peak_rss_mib_cold_load": round(max(peak_after, peak_during)),
        }
    )
    stages["recommender_cold_load"] = round(cold, 1)
    loads["end"] = load()
    print(
        f"recommender cold load {cold:.1f} s ({rec['cold_load_from']}), RSS {rss_after:.0f} MiB",
        flush=True,
    )
    for client in (api, stream, recommender):
        client.close()


def report(figures: dict[str, Any]) -> None:
    """Every figure beside its (10M) target."""
    n = figures.get("upload", {}).get("accepted", figures["songs_requested"])
    print(
        f"\nEmergify end to end at {n:,} songs ({figures['shape']}, {figures['database']}, "
        f"commit {figures['commit'][:12]})"
    )
    rec = figures.get("recommender", {})
    measured: dict[str, float | None] = {
        "recommender_rss_gb": (
            round(
                max(rec.get("rss_mib_loaded", 0), rec.get("rss_mib_after_cold_load", 0)) / 1024, 2
            )
            if rec
            else None
        ),
        "recommender_cold_load_s": rec.get("cold_load_s"),
        "batch_retrain_s": figures.get("retrain", {}).get("seconds"),
        "materialised_after_last_202_s": figures.get("speed_layer", {}).get(
            "materialised_after_last_202_s"
        ),
    }
    verdicts = {}
    print(f"  {'figure':<34} {'measured':>10} {'10M target':>11}  verdict")
    for name, target in TARGETS.items():
        value = measured[name]
        verdict = "not run" if value is None else ("pass" if value <= target else "FAIL")
        verdicts[name] = {"measured": value, "target": target, "verdict": verdict}
        print(f"  {name:<34} {value if value is not None else '-':>10} {target:>11}  {verdict}")
    figures["targets"] = verdicts
    if lat := rec.get("latency_ms"):
        print(f"  recommendation latency via gateway: p50 {lat['p50']} ms, p99 {lat['p99']} ms")
    if sl := figures.get("speed_layer"):
        print(
            f"  speed layer: {sl.get('songs_per_s_10_to_90_pct')} songs/s (10-90%), "
            f"{sl.get('songs_per_s_first_202_to_done')} songs/s first 202 -> done"
        )
    if up := figures.get("upload"):
        print(
            f"  upload: {up['songs_per_s']} songs/s through the gateway, {up['rejected']} rejected"
        )
    print("  stages (s): " + ", ".join(f"{k} {v}" for k, v in figures["stages_s"].items()))
    print("  load: " + ", ".join(f"{k} {v['load_1m']}" for k, v in figures["load"].items()))


if __name__ == "__main__":
    main()
