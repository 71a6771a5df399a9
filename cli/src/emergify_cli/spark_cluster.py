"""A Spark standalone cluster (one master, N workers) started from the pyspark wheel.

``emergify up`` with ``EMERGIFY_SPARK_CLUSTER=1`` and the cluster tests use it, so the
topology a user starts is the one the tests exercise. Each daemon is its own JVM in its own
process group; ``stop()`` kills what is left. See docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from pydantic import Field, SecretStr

from emergify_cli.broker import free_port
from emergify_contracts.settings import EmergifySettings


class SparkClusterSettings(EmergifySettings):
    """``EMERGIFY_SPARK_CLUSTER=1`` (or ``make up SPARK=cluster``): ``emergify up`` starts a
    standalone master and workers and points the stream processor at them."""

    spark_cluster: bool = Field(
        False, description="Start a Spark standalone cluster with the stack (not local[2])."
    )
    spark_cluster_host: str = Field("127.0.0.1", description="Address the daemons bind to.")
    spark_cluster_port: int = Field(7077, description="The master's port (spark://host:port).")
    spark_cluster_webui_port: int = Field(8180, description="The master's web UI and JSON.")
    spark_cluster_workers: int = Field(2, ge=1)
    spark_cluster_worker_cores: int = Field(1, ge=1)
    spark_cluster_worker_memory: str = Field(
        "1g", description="Memory each worker offers its executors (the executor heap fits in it)."
    )
    spark_auth_secret: SecretStr | None = Field(
        None,
        description="spark.authenticate secret: the same variable the stream processor (the "
        "driver) reads, so daemons and driver agree. Unset: no authentication.",
    )


def spark_home() -> Path:
    """The installed pyspark package: its ``bin/spark-class`` and ``jars/`` hold the
    standalone daemons (the wheel has no ``sbin/start-master.sh``)."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass
class SparkCluster:
    """A master and ``workers`` workers, each with ``worker_cores`` cores and
    ``worker_memory`` for executors, bound to ``host``.

    ``netns`` (one per daemon, master first, or empty) runs each daemon under ``ip netns
    exec`` for the multi-host rehearsal; ``worker_hosts`` then gives each worker's address.
    ``auth_secret`` turns on ``spark.authenticate`` for the daemons; the driver must use the
    same secret.
    """

    workdir: Path
    host: str = "127.0.0.1"
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "1g"
    daemon_memory: str = "256m"
    port: int = 0
    webui_port: int = 0
    auth_secret: str | None = None
    worker_hosts: Sequence[str] = ()
    netns: Sequence[str] = ()  # master's namespace first, then one per worker
    python: str = sys.executable
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.webui_port = self.webui_port or free_port()

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def json_url(self) -> str:
        return f"http://{self.host}:{self.webui_port}/json/"

    def _env(self, host: str) -> dict[str, str]:
        opts = []
        if self.auth_secret:
            opts += ["-Dspark.authenticate=true", f"-Dspark.authenticate.secret={self.auth_secret}"]
        return {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": host,
            "SPARK_LOCAL_HOSTNAME": host,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "SPARK_DAEMON_JAVA_OPTS": " ".join(opts),
            # Executors start Python workers with the driver's interpreter path (sent with
            # each task); this is the fallback for anything started by the worker itself.
            "PYSPARK_PYTHON": self.python,
            "SPARK_LOG_DIR": str(self.workdir),
        }

    def _spawn(self, name: str, args: list[str], host: str, netns: str | None) -> None:
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        log = (self.workdir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd,
            env=self._env(host),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.procs.append(proc)

    @classmethod
    def from_settings(cls, settings: SparkClusterSettings, workdir: Path) -> SparkCluster:
        return cls(
            workdir,
            host=settings.spark_cluster_host,
            port=settings.spark_cluster_port,
            webui_port=settings.spark_cluster_webui_port,
            workers=settings.spark_cluster_workers,
            worker_cores=settings.spark_cluster_worker_cores,
            worker_memory=settings.spark_cluster_worker_memory,
            auth_secret=(
                settings.spark_auth_secret.get_secret_value()
                if settings.spark_auth_secret
                else None
            ),
        )

    def start(self, timeout: float = 120.0) -> SparkCluster:
        """Start the master, then the workers; return once every worker is registered."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        spaces = list(self.netns) or [None] * (self.workers + 1)
        hosts = list(self.worker_hosts) or [self.host] * self.workers
        try:
            self._spawn(
                "spark-master",
                [
                    "org.apache.spark.deploy.master.Master",
                    *("--host", self.host, "--port", str(self.port)),
                    *("--webui-port", str(self.webui_port)),
                ],
                self.host,
                spaces[0],
            )
            for i in range(self.workers):
                self._spawn(
                    f"spark-worker-{i}",
                    [
                        "org.apache.spark.deploy.worker.Worker",
                        *("--host", hosts[i], "--cores", str(self.worker_cores)),
                        *("--memory", self.worker_memory, "--webui-port", str(free_port())),
                        *("--work-dir", str(self.workdir / f"work-{i}")),
                        self.master_url,
                    ],
                    hosts[i],
                    spaces[i + 1],
                )
            self.wait_workers(self.workers, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def state(self) -> dict:
        """The master's JSON status (workers, applications)."""
        return httpx.get(self.json_url, timeout=5).json()

    def alive_workers(self) -> int:
        return sum(1 for w in self.state().get("workers", []) if w.get("state") == "ALIVE")

    def wait_workers(self, n: int, timeout: float = 120.0) -> None:
        """Wait until ``n`` workers are ALIVE at the master."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"a Spark daemon exited with code {proc.returncode}; logs in {self.workdir}"
                    )
            try:
                alive = self.alive_workers()
                if alive >= n:
                    return
                last = f"{alive} of {n} workers alive"
            except (httpx.HTTPError, ValueError) as exc:
                last = type(exc).__name__
            time.sleep(0.5)
        raise TimeoutError(f"Spark cluster not ready after {timeout:.0f}s ({last})")

    def kill_worker(self, index: int) -> None:
        """SIGKILL worker ``index``'s JVM and its executors (its whole process group)."""
        proc = self.procs[index + 1]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    def executor_pids(self) -> list[int]:
        """Executor JVMs started by the workers (children in their process groups)."""
        out = subprocess.run(
            ["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True
        ).stdout
        groups = {p.pid for p in self.procs}
        pids = []
        for pid in map(int, out.split()):
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(pid) in groups:
                    pids.append(pid)
        return pids

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every daemon (workers first), then SIGKILL whatever lingers."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            # Executors live in the worker's group and may outlive it.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        # Executors and their Python workers are reaped by init, not by us: wait until every
        # group is empty, so a caller that returns from stop() leaves no JVM behind.
        groups = [p.pid for p in self.procs]
        deadline = time.monotonic() + timeout
        while any(_group_alive(g) for g in groups) and time.monotonic() < deadline:
            for g in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(g, signal.SIGKILL)
            time.sleep(0.1)
        self.procs.clear()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
