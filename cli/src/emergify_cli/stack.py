"""Run the whole system on one machine: embedded broker + every service as a subprocess.

``emergify up`` uses it, and so do the end-to-end tests (on free ports, in a temporary
folder), so what the tests start is exactly what a user starts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from urllib.parse import urlparse

import httpx

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_cli.spark_cluster import SparkCluster, SparkClusterSettings
from emergify_cli.waiting import wait_for
from emergify_contracts.internal_auth import internal_headers
from emergify_contracts.settings import EmergifySettings


@dataclass(frozen=True)
class ServiceSpec:
    """One service: its name in logs, the module ``python -m`` runs, and its URL setting."""

    name: str
    module: str
    url_setting: str
    health_path: str = "/health"
    start_timeout: float = 120.0
    default_url: str | None = None  # for services whose URL is not a shared setting


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("ingest", "emergify_ingest", "ingest_url"),
    ServiceSpec("stream-processor", "emergify_stream", "stream_processor_url", start_timeout=240.0),
    ServiceSpec("recommender", "emergify_recommender", "recommender_url"),
    ServiceSpec("spotify-gateway", "emergify_spotify", "spotify_gateway_url"),
    ServiceSpec("api-gateway", "emergify_gateway", "gateway_url"),
    ServiceSpec("dashboard", "emergify_dashboard", "dashboard_url", health_path="/_stcore/health"),
)

#: The offline demo's stand-in for Spotify (follows Spotify's documented contract).
SPOTIFY_SANDBOX = ServiceSpec(
    "spotify-sandbox",
    "emergify_spotify.sandbox",
    "spotify_sandbox_url",
    default_url="http://127.0.0.1:8090",
)


def services_for(spotify_sandbox: bool) -> tuple[ServiceSpec, ...]:
    """The services to start; the Spotify sandbox first when the offline demo is on."""
    return (SPOTIFY_SANDBOX, *SERVICES) if spotify_sandbox else SERVICES


def _pump(name: str, stream: TextIO, sink: Callable[[str], None]) -> None:
    for line in stream:
        sink(f"{name:<16} | {line.rstrip()}")


@dataclass
class Stack:
    """The embedded broker and every service, started in dependency order.

    ``env`` is the environment the services get (``EMERGIFY_*`` settings); ``workdir``
    is where relative paths (``./var/...``) resolve.
    """

    env: dict[str, str]
    workdir: Path
    services: tuple[ServiceSpec, ...] = SERVICES
    embedded_broker: bool = True
    sink: Callable[[str], None] = print
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None
    spark_cluster: SparkCluster | None = None
    #: service name -> network namespace to run it in (``ip netns exec``; the multi-host
    #: rehearsal); services not named run in the caller's namespace.
    netns: dict[str, str] = field(default_factory=dict)
    _threads: list[threading.Thread] = field(default_factory=list)

    @property
    def settings(self) -> EmergifySettings:
        overrides = {
            k.removeprefix("EMERGIFY_").lower(): v
            for k, v in self.env.items()
            if k.startswith("EMERGIFY_")
        }
        return EmergifySettings(_env_file=self.workdir / ".env", **overrides)  # type: ignore[call-arg]

    def url(self, service: str) -> str:
        spec = next(s for s in self.services if s.name == service)
        value = getattr(self.settings, spec.url_setting, None)
        value = value or self.env.get(f"EMERGIFY_{spec.url_setting.upper()}") or spec.default_url
        return str(value)

    def start_broker(self) -> None:
        settings = self.settings
        host, _, port = settings.kafka_bootstrap_servers.split(",")[0].rpartition(":")
        if self.embedded_broker:
            log = open(self.workdir / "var" / "broker.log", "ab")  # noqa: SIM115 - lives with the broker
            self.broker = EmbeddedBroker(int(port), log=log).start()
            self.sink(f"{'broker':<16} | embedded Tansu broker on {host}:{port} (memory only)")
        create_topics(
            settings.kafka_bootstrap_servers, settings.topics(), settings.topic_partitions
        )

    def start_spark_cluster(self) -> None:
        """With ``EMERGIFY_SPARK_CLUSTER=1``: a standalone master and workers, and the stream
        processor submits to them (unless ``EMERGIFY_SPARK_MASTER`` names another master)."""
        overrides = {
            k.removeprefix("EMERGIFY_").lower(): v
            for k, v in self.env.items()
            if k.startswith(("EMERGIFY_SPARK_CLUSTER", "EMERGIFY_SPARK_AUTH_SECRET"))
        }
        settings = SparkClusterSettings(_env_file=self.workdir / ".env", **overrides)  # type: ignore[call-arg]
        if not settings.spark_cluster:
            return
        cluster = SparkCluster.from_settings(settings, self.workdir / "var" / "spark")
        self.spark_cluster = cluster.start()
        self.env.setdefault("EMERGIFY_SPARK_MASTER", cluster.master_url)
        self.env.setdefault("EMERGIFY_SPARK_DRIVER_HOST", cluster.host)
        self.sink(
            f"{'spark':<16} | standalone master {cluster.master_url} with "
            f"{cluster.workers} workers (UI http://{cluster.host}:{cluster.webui_port})"
        )

    def start_service(self, spec: ServiceSpec) -> None:
        env = {
            **os.environ,
            **self.env,
            "PYSPARK_PYTHON": sys.executable,
            "PYSPARK_DRIVER_PYTHON": sys.executable,
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-m", spec.module]
        if spec.name in self.netns:
            cmd = ["ip", "netns", "exec", self.netns[spec.name], *cmd]
        proc = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.procs[spec.name] = proc
        assert proc.stdout is not None
        t = threading.Thread(target=_pump, args=(spec.name, proc.stdout, self.sink), daemon=True)
        t.start()
        self._threads.append(t)

    def wait_healthy(self, spec: ServiceSpec) -> None:
        url = self.url(spec.name).rstrip("/") + spec.health_path

        def healthy() -> bool:
            proc = self.procs.get(spec.name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{spec.name} exited with code {proc.returncode}; see its log")
            try:
                # Internal services answer /health only to holders of the internal token.
                r = httpx.get(url, timeout=2, headers=internal_headers(self.settings))
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, spec.start_timeout, f"{spec.name} to be healthy at {url}", 0.5)

    def start(self) -> Stack:
        """Start broker and services; return when every service answers its health check."""
        (self.workdir / "var").mkdir(parents=True, exist_ok=True)
        try:
            self.start_broker()
            self.start_spark_cluster()
            for spec in self.services:
                self.start_service(spec)
            for spec in self.services:
                self.wait_healthy(spec)
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self, service: str) -> None:
        """SIGKILL one service (fault tests)."""
        proc = self.procs[service]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def restart(self, service: str) -> None:
        spec = next(s for s in self.services if s.name == service)
        self.start_service(spec)
        self.wait_healthy(spec)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every service (gateway first), then the broker; SIGKILL what lingers."""
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self.spark_cluster:
            self.spark_cluster.stop()
            self.spark_cluster = None
        if self.broker:
            self.broker.stop()
            self.broker = None


def port_of(url: str) -> int:
    return urlparse(url).port or 80


def free_port_env() -> dict[str, str]:
    """``EMERGIFY_*`` addresses for every service and the broker on free loopback ports, so
    a test or benchmark stack never collides with `make up` or another run, and fresh
    internal token and dashboard key."""
    urls = {
        spec.url_setting.upper(): f"http://127.0.0.1:{free_port()}"
        for spec in (*SERVICES, SPOTIFY_SANDBOX)
    }
    env = {f"EMERGIFY_{name}": url for name, url in urls.items()}
    env["EMERGIFY_KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{free_port()}"
    # A stack of its own gets credentials of its own: the internal token (services refuse to
    # start without one) and the dashboard's read-only key (it never falls back to the admin's).
    env["EMERGIFY_INTERNAL_TOKEN"] = secrets.token_urlsafe(32)
    env["EMERGIFY_DASHBOARD_API_KEY"] = secrets.token_urlsafe(32)
    return env
