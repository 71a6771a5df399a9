"""Feedback-to-effect latency on the embedded stack (SQLite, embedded broker, local Spark).

For each probe: a recommendation for a listener through the gateway, a dislike of its first
song (POST /api/v1/feedback), and the time from that 202 until a recommendation through the
gateway no longer returns the song (polled every 20 ms). The path measured is the whole
loop: ingest -> feedback topic -> Spark feedback query -> listener tables -> listener-change
event -> the recommender's cache -> the next answer. Each probe also notes when the event is
committed (``GET /api/v1/listeners/{id}/feedback`` reads the table, not the cache), which
splits the figure into 202 -> committed (Spark) and committed -> effect (event and cache).
Target: p95 < 2 s.

A probe that sees no effect within ``--probe-timeout`` is a failure: it is counted and
named in the JSON, and the script exits 1 (its latency is not made up). Run:
`uv run python bench/feedback_latency.py [--probes N] [--quick] [--database-url URL]`.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loop_stack import (
    SAMPLE,
    BenchFailure,
    RunningStack,
    call,
    exit_with,
    machine_load,
    pct,
    run_facts,
    running_stack,
    write_results,
)

from emergify_cli.stack import SERVICES
from emergify_cli.synthetic_catalog import load_songs


def probe(running: RunningStack, listener: str, seed: str, timeout_s: float) -> tuple[float, float]:
    """(202 -> committed, 202 -> effect) in seconds for one dislike."""
    api = running.api
    body = {"seeds": [seed], "listener_id": listener, "include_recent": True, "limit": 10}

    def recommended() -> set[str]:
        r = call(api, "POST", "/api/v1/recommendations", json=body)
        return {i["track_id"] for i in r.json()["items"]}

    first = call(api, "POST", "/api/v1/recommendations", json=body).json()["items"]
    if not first:
        raise BenchFailure(f"no recommendation for seed {seed}")
    target = first[0]["track_id"]
    r = call(
        api,
        "POST",
        "/api/v1/feedback",
        expect=202,
        json={"track_id": target, "signal": "dislike", "listener_id": listener},
    )
    accepted = time.perf_counter()
    event_id = r.json()["event_id"]
    committed: float | None = None
    effect: float | None = None

    def done() -> bool:
        nonlocal committed, effect
        if committed is None:
            stored = call(api, "GET", f"/api/v1/listeners/{listener}/feedback").json()
            if any(i["event_id"] == event_id for i in stored["items"]):
                committed = time.perf_counter() - accepted
        if effect is None and target not in recommended():
            effect = time.perf_counter() - accepted
        return committed is not None and effect is not None

    running.poll(done, timeout_s, f"the dislike of {target} by {listener} to take effect")
    assert committed is not None and effect is not None
    return committed, effect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=40, help="dislikes to time")
    parser.add_argument("--quick", action="store_true", help="10 probes")
    parser.add_argument(
        "--probe-timeout", type=float, default=120.0, help="seconds a dislike may take"
    )
    parser.add_argument(
        "--database-url", default=None, help="default: SQLite in a temporary folder"
    )
    parser.add_argument(
        "--model-wait",
        type=float,
        default=300.0,
        help="seconds to wait for a first model before probing without one",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="start no probe after this many minutes of probing (the JSON says how many ran)",
    )
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, piped
    probes = 10 if args.quick else args.probes
    real = load_songs(SAMPLE)
    committed: list[float] = []
    effects: list[float] = []
    failures: list[str] = []
    loads: list[float] = []
    load_before = machine_load()
    # No dashboard (a lighter stack on a shared machine). The spotify-gateway stays: the
    # api-gateway's health check, which the stack waits for, needs every upstream.
    services = tuple(s for s in SERVICES if s.name != "dashboard")
    with running_stack(
        "feedback", services=services, database_url=args.database_url, model_timeout=args.model_wait
    ) as running:
        # Warm-up: the first feedback micro-batch plans the query and warms the JVM.
        model_version = running.model_version
        probe(running, "bench-warmup", real[0].track_id, 600)
        started = time.monotonic()
        for i in range(probes):
            if args.max_minutes and time.monotonic() - started > args.max_minutes * 60:
                print(f"--max-minutes reached after {i} probes", flush=True)
                probes = i
                break
            seed = real[(i * 97 + 11) % len(real)].track_id
            try:
                c, e = probe(running, f"bench-{i}", seed, args.probe_timeout)
            except BenchFailure as exc:
                running.check_alive()  # a dead service ends the run, it is no probe's fault
                failures.append(f"probe {i}: {exc}")
                print(f"FAILED probe {i}: {exc}", flush=True)
                continue
            committed.append(c)
            effects.append(e)
            loads.append(machine_load()["load_1m"])
            print(f"probe {i}: committed {c:.2f} s, effect {e:.2f} s (load {loads[-1]})")
    if not effects:
        print("no probe succeeded:\n" + "\n".join(failures), file=sys.stderr)
        return 1
    figures = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "probes": probes,
        "succeeded": len(effects),
        "p50_s": round(pct(effects, 50), 3),
        "p95_s": round(pct(effects, 95), 3),
        "max_s": round(max(effects), 3),
        "committed_p50_s": round(pct(committed, 50), 3),
        "committed_p95_s": round(pct(committed, 95), 3),
        "committed_to_effect_p50_s": round(
            pct([e - c for c, e in zip(committed, effects, strict=True)], 50), 3
        ),
        **run_facts(
            failures=failures,
            loads=loads,
            load_before=load_before,
            model_version=model_version,
            database_url=args.database_url,
        ),
    }
    print("| probes ok | p50 (s) | p95 (s) | max (s) | 202 -> committed p50 / p95 (s) | load |")
    print("|---|---|---|---|---|---|")
    print(
        f"| {len(effects)}/{probes} | {figures['p50_s']} | {figures['p95_s']} | "
        f"{figures['max_s']} | {figures['committed_p50_s']} / {figures['committed_p95_s']} | "
        f"{figures['load_average_1m_mean']} |"
    )
    print(f"results: {write_results('feedback_latency', figures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    exit_with("feedback_latency", main)
