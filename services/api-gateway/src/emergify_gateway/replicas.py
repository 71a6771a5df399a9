"""Several instances of one upstream service: which one takes the next request, and which are up.

A service is a :class:`ReplicaPool` of one or more base URLs. The next request goes to the
replica with the fewest requests in flight (ties: the next one in turn), so a replica slowed by
a model reload or a busy core gets less work, and equal replicas share it in turn.

A replica is taken out when a request to it fails at the transport level (connection refused,
connection broken before an answer) or when its ``/health`` is not ok; only a good ``/health``
brings it back (:meth:`ReplicaPool.check`, run in the background by :class:`ReplicaMonitor`).
A pool of one replica never refuses by itself: its one replica is always tried, and its
failure is the answer, as for a single service.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import httpx
import structlog

from emergify_gateway.health import ServiceHealth, probe

log = structlog.get_logger()


@dataclass
class Replica:
    """One instance of a service, and what the gateway knows of it."""

    url: str
    up: bool = True
    in_flight: int = 0
    health: ServiceHealth | None = None  # its last /health answer
    reason: str | None = None  # why it is down

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")


@dataclass
class Lease:
    """A request in flight on ``replica``; :meth:`release` it once (later calls do nothing)."""

    replica: Replica
    _released: bool = field(default=False, repr=False)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.replica.in_flight -= 1


class ReplicaPool:
    """The replicas of one service (one or more base URLs)."""

    def __init__(self, service: str, urls: list[str]) -> None:
        if not urls:
            raise ValueError(f"{service} needs at least one URL")
        self.service = service
        self.replicas = [Replica(url) for url in urls]
        self._turn = itertools.count()

    @property
    def replicated(self) -> bool:
        return len(self.replicas) > 1

    def up(self) -> list[Replica]:
        """The replicas currently taking requests."""
        return [r for r in self.replicas if r.up]

    def pick(self, exclude: frozenset[str] = frozenset()) -> Replica | None:
        """The replica for the next request (not one of ``exclude``, by URL), or None when none
        is up. Least in flight first; among equals, the next in turn."""
        if not self.replicated:
            only = self.replicas[0]
            return None if only.url in exclude else only
        candidates = [r for r in self.replicas if r.up and r.url not in exclude]
        if not candidates:
            return None
        start = next(self._turn) % len(candidates)
        rotated = candidates[start:] + candidates[:start]
        return min(rotated, key=lambda r: r.in_flight)  # min keeps the first of equals

    def lease(self, replica: Replica) -> Lease:
        """Count a request as in flight on ``replica`` until the lease is released."""
        replica.in_flight += 1
        return Lease(replica)

    def mark_down(self, replica: Replica, reason: str) -> None:
        """Stop sending to ``replica`` until its /health is ok again."""
        if replica.up and self.replicated:
            log.warning("replica down", service=self.service, replica=replica.url, reason=reason)
            replica.up, replica.reason = False, reason

    def preferred_url(self) -> str:
        """A replica's URL for calls that are not balanced (the OpenAPI document): an up one."""
        live = self.up()
        return (live or self.replicas)[0].url

    async def check(self, client: httpx.AsyncClient, timeout: float) -> ServiceHealth:
        """Ask every replica for its /health, mark each up or down, and sum them up."""
        results = await asyncio.gather(*(probe(client, r.url, timeout) for r in self.replicas))
        for replica, health in zip(self.replicas, results, strict=True):
            replica.health = health
            # "degraded" still serves (e.g. the broker is away, the poll keeps it fresh);
            # "starting" (no catalog yet) and "unavailable" do not.
            healthy = health.status in ("ok", "degraded")
            if healthy and not replica.up:
                log.info("replica up", service=self.service, replica=replica.url)
            if healthy:
                replica.up, replica.reason = True, None
            else:
                self.mark_down(replica, health.detail or health.status)
        return self.summary()

    def summary(self) -> ServiceHealth:
        """The service's health from its replicas' last answers: ok when every one is ok,
        unavailable when none is up, else degraded; each replica's state as ``replicas``."""
        if not self.replicated:
            return self.replicas[0].health or ServiceHealth(status="unavailable")
        states = {
            r.url: {
                **(r.health.model_dump(exclude_none=True) if r.health else {}),
                "up": r.up,
                "in_flight": r.in_flight,
                **({"reason": r.reason} if r.reason else {}),
            }
            for r in self.replicas
        }
        live = len(self.up())
        total = len(self.replicas)
        all_ok = live == total and all(r.health and r.health.status == "ok" for r in self.replicas)
        if all_ok:
            return ServiceHealth(status="ok", replicas=states)  # type: ignore[call-arg]
        return ServiceHealth(
            status="degraded" if live else "unavailable",
            detail=f"{live} of {total} replicas up",
            replicas=states,  # type: ignore[call-arg]
        )


class LiveURLs(Mapping[str, str]):
    """Service name → the URL of one of its live replicas, resolved at each lookup."""

    def __init__(self, pools: Mapping[str, ReplicaPool]) -> None:
        self._pools = pools

    def __getitem__(self, service: str) -> str:
        return self._pools[service].preferred_url()

    def __iter__(self) -> Iterator[str]:
        return iter(self._pools)

    def __len__(self) -> int:
        return len(self._pools)


class ReplicaMonitor:
    """Checks the replicated services' health every ``interval_seconds`` in the background."""

    def __init__(
        self,
        pools: Mapping[str, ReplicaPool],
        client: httpx.AsyncClient,
        interval_seconds: float,
        timeout: float,
    ) -> None:
        self._pools = [p for p in pools.values() if p.replicated]
        self._client = client
        self._interval = interval_seconds
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None

    async def check_all(self) -> None:
        """One round of checks of every replicated service."""
        await asyncio.gather(*(p.check(self._client, self._timeout) for p in self._pools))

    async def _run(self) -> None:
        while True:
            try:
                await self.check_all()
            except Exception as exc:  # a check must never end the loop
                log.warning("replica check failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self._interval)

    def start(self) -> None:
        if self._pools and self._task is None:
            self._task = asyncio.create_task(self._run(), name="replica-monitor")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
