"""What the listener-loop benchmarks share: the whole stack on free ports with the sample
catalog loaded, patient HTTP calls, percentiles and the machine's load.

The machine these figures come from is a shared 2-core VM, so the calls here wait out what an
overloaded machine does to a healthy stack (a 503 or 429 with ``Retry-After``, a refused
connection while a service restarts) for a generous while, and then fail saying what they
waited for. They never turn a failure into a figure.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from emergify_cli.stack import SERVICES, ServiceSpec, Stack, free_port_env
from emergify_cli.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "every_fresh_find.csv"
RESULTS = REPO / "bench" / "results"
SAMPLE_SONGS = 4470
#: Statuses a busy but healthy stack answers for a while; waited out, never counted.
TRANSIENT = {429, 502, 503, 504}


class BenchFailure(RuntimeError):
    """The stack did not do what the benchmark measures (the message says what and where)."""


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank on the sorted values)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def machine_load() -> dict[str, float]:
    """The 1, 5 and 15-minute load averages and the CPU count, as `uptime` shows them."""
    one, five, fifteen = os.getloadavg()
    return {
        "load_1m": round(one, 2),
        "load_5m": round(five, 2),
        "load_15m": round(fifteen, 2),
        "cpus": float(os.cpu_count() or 0),
    }


def call(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    expect: int | tuple[int, ...] = 200,
    patience: float = 120.0,
    **kwargs: Any,
) -> httpx.Response:
    """One request that waits out transient answers (``TRANSIENT``, a refused or timed-out
    connection) for up to ``patience`` seconds; any other status than ``expect`` fails at once
    with the answer's body."""
    wanted = (expect,) if isinstance(expect, int) else expect
    deadline = time.monotonic() + patience
    last = "no answer"
    while True:
        try:
            r = client.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.TimeoutException, httpx.RemoteProtocolError) as exc:
            last = f"{type(exc).__name__}: {exc}"
            wait = 1.0
        else:
            if r.status_code in wanted:
                return r
            if r.status_code not in TRANSIENT:
                raise BenchFailure(f"{method} {path} answered {r.status_code}: {r.text[:500]}")
            last = f"{r.status_code}: {r.text[:200]}"
            wait = min(5.0, float(r.headers.get("retry-after", "1") or 1))
        if time.monotonic() + wait > deadline:
            raise BenchFailure(f"{method} {path} still failing after {patience:.0f} s ({last})")
        time.sleep(wait)


@dataclass
class RunningStack:
    """The stack, a client on its gateway with the admin key, and where its log goes."""

    stack: Stack
    api: httpx.Client
    admin_key: str
    workdir: Path
    log_path: Path
    model_version: int | None = None

    def gateway(self) -> str:
        return self.stack.url("api-gateway")

    def check_alive(self) -> None:
        """Fail at once, naming the service, when one of the stack's processes has died."""
        for name, proc in self.stack.procs.items():
            if proc.poll() is not None:
                raise BenchFailure(
                    f"{name} exited with code {proc.returncode}; see {self.log_path}"
                )

    def poll(
        self, check: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
    ) -> Any:
        """``wait_for`` that also fails as soon as a service dies."""

        def checked() -> Any:
            self.check_alive()
            return check()

        try:
            return wait_for(checked, timeout, what, interval)
        except TimeoutError as exc:
            raise BenchFailure(f"{exc}; stack log: {self.log_path}") from None


@contextmanager
def running_stack(
    prefix: str,
    *,
    services: tuple[ServiceSpec, ...] | None = None,
    env: dict[str, str] | None = None,
    database_url: str | None = None,
    catalog_timeout: float = 900.0,
    model_timeout: float = 300.0,
) -> Iterator[RunningStack]:
    """Broker + ``services`` (default: the stack's) on free ports in a temporary folder,
    SQLite unless ``database_url``, the sample catalog uploaded and materialised (and a first
    model trained, unless none comes within ``model_timeout``: ``model_version`` says)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"emergify-bench-{prefix}-"))
    key = secrets.token_urlsafe(24)
    stack_env = free_port_env()
    stack_env.update(
        {
            "EMERGIFY_DATABASE_URL": database_url or f"sqlite:///{workdir / 'var' / 'emergify.db'}",
            "EMERGIFY_ADMIN_API_KEY": key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_RATE_LIMIT_PER_MINUTE": "1000000",
            "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
            **(env or {}),
        }
    )
    log_path = workdir / "stack.log"
    log = log_path.open("w")
    print(f"stack log: {log_path}", flush=True)
    # A busy machine starts the Spark driver slowly: give every service 15 minutes to come up.
    specs = tuple(
        dataclasses.replace(spec, start_timeout=max(spec.start_timeout, 900.0))
        for spec in (services or SERVICES)
    )
    stack = Stack(
        env=stack_env,
        workdir=workdir,
        services=specs,
        sink=lambda line: print(line, file=log, flush=True),
    )
    stack.start()
    api = httpx.Client(base_url=stack.url("api-gateway"), headers={"X-API-Key": key}, timeout=300)
    try:
        running = RunningStack(stack, api, key, workdir, log_path)
        with SAMPLE.open("rb") as f:
            call(
                api,
                "POST",
                "/api/v1/songs/upload",
                expect=202,
                files={"file": (SAMPLE.name, f, "text/csv")},
            )

        def catalog() -> dict[str, Any] | None:
            r = api.get("/api/v1/catalog")
            return r.json() if r.status_code == 200 else None

        running.poll(
            lambda: (c := catalog()) is not None and c["songs"] >= SAMPLE_SONGS,
            catalog_timeout,
            "the sample catalog to be materialised",
            interval=1.0,
        )
        # The loop works before the first model too (the index standardizes by the catalog);
        # wait for one a while, as `make up` does, and say whether it came.
        try:
            running.poll(
                lambda: (c := catalog()) is not None and c.get("model_version") is not None,
                model_timeout,
                "a first model",
                interval=1.0,
            )
        except BenchFailure as exc:
            running.check_alive()
            print(f"going on without a model: {exc}", flush=True)
        running.model_version = (catalog() or {}).get("model_version")
        yield running
    finally:
        api.close()
        stack.stop()
        log.close()


def write_results(name: str, figures: dict[str, Any]) -> Path:
    """``bench/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(figures, indent=2) + "\n")
    return path


def run_facts(
    *,
    failures: list[str],
    loads: list[float],
    load_before: dict[str, float],
    model_version: int | None,
    database_url: str | None,
) -> dict[str, Any]:
    """What every loop benchmark's JSON says about its run, beside its own figures."""
    return {
        "failed": failures,
        "trigger_interval_s": 0.5,
        "model_version": model_version,
        "database": "postgresql" if database_url else "sqlite",
        "load_before": load_before,
        "load_average_1m_mean": round(sum(loads) / len(loads), 2),
        "load_after": machine_load(),
        "note": "2-core VM shared with other jobs; see the load columns",
    }


def exit_with(name: str, main: Callable[[], int]) -> None:
    """Run a benchmark's ``main``; a stack that fails is a clear message and exit code 1."""
    try:
        raise SystemExit(main())
    except (BenchFailure, httpx.HTTPError) as exc:
        print(f"{name} failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
