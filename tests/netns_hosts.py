"""Several "hosts" on one machine: Linux network namespaces joined by a bridge, each with its
own address in a private /24 (root only; traffic never leaves the machine).

Importable as ``netns_hosts`` (pytest puts tests/ on the path). ``Hosts`` is a context
manager: leaving it kills every process started in a namespace, deletes the namespaces and
the bridge, even when the test failed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def netns_available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"emgprobe{os.getpid() % 100000}"
    try:
        _ip("netns", "add", probe)
    except (OSError, subprocess.CalledProcessError) as exc:
        return f"ip netns add failed: {exc}"
    _ip("netns", "del", probe)
    return None


class Hosts:
    """One bridge ``emgbr<N>`` at ``10.213.<N>.1`` in the root namespace (the "database host"
    side), and one namespace per name with ``eth0`` at ``10.213.<N>.<10+i>``.

    ``<N>`` comes from the process id so that two runs on the machine do not share a subnet.
    """

    def __init__(self, names: list[str], subnet: int | None = None) -> None:
        self.n = subnet if subnet is not None else 20 + os.getpid() % 200
        self.prefix = f"emg{self.n}"
        self.bridge = f"emgbr{self.n}"
        self.gateway = f"10.213.{self.n}.1"
        self.names = list(names)
        self.addr = {name: f"10.213.{self.n}.{10 + i}" for i, name in enumerate(names)}
        self.ns = {name: f"{self.prefix}-{name}" for name in names}
        self.created_ns: list[str] = []
        self.created_links: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Hosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _create(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.created_links.append(self.bridge)
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns, veth = self.ns[name], f"{self.prefix}v{i}"
            _ip("netns", "add", ns)
            self.created_ns.append(ns)
            _ip("link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.created_links.append(veth)
            _ip("link", "set", veth, "master", self.bridge, "up")
            _ip("-n", ns, "addr", "add", f"{self.addr[name]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            # Spark's Python workers talk to their JVM over the namespace's own loopback.
            _ip("-n", ns, "link", "set", "lo", "up")

    def popen(
        self, name: str | None, cmd: list[str], log: Path, **kw: object
    ) -> subprocess.Popen[bytes]:
        """Start ``cmd`` in host ``name`` (None: the root namespace), in its own process
        group, logging to ``log``; killed by ``close()``."""
        if name is not None:
            cmd = ["ip", "netns", "exec", self.ns[name], *cmd]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **kw
            )  # type: ignore[call-overload]
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill what was started here, then delete the namespaces and links made."""
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self.procs.clear()
        for ns in reversed(self.created_ns):
            # Anything still inside (a process started without popen) would keep the
            # namespace's interfaces alive: kill it first.
            pids = subprocess.run(
                ["ip", "netns", "pids", ns], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.created_ns.clear()
        for link in reversed(self.created_links):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
        self.created_links.clear()

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run that still exist (empty after ``close()``)."""
        ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        return [
            word
            for word in (*ns.split(), *(line.split(":")[1].strip() for line in links.splitlines()))
            if word.startswith((self.prefix, self.bridge))
        ]


def wait_for_port(host: str, port: int, timeout: float = 60.0) -> None:
    """Wait until ``host:port`` accepts a TCP connection (from the caller's namespace)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listens on {host}:{port} after {timeout:.0f}s"
                ) from None
            time.sleep(0.2)
