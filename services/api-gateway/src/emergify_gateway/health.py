"""The system's health: every upstream service's ``/health``, asked concurrently.

The combined report is reused for ``ttl_seconds`` and computed by one caller at a time
(:class:`HealthCache`), so a crowd of anonymous callers costs one round of probes per period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # replicas imports probe from here
    from emergify_gateway.replicas import ReplicaPool


class ServiceHealth(BaseModel):
    """One service's state as it reported it (its own details are kept as extra members)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="ok, starting, degraded, or unavailable (did not answer).")
    detail: str | None = Field(None, description="Why the service is not ok, when known.")


class HealthReport(BaseModel):
    """The gateway's health: ok only when every service is ok."""

    status: Literal["ok", "degraded"] = Field(description="ok when every service is ok.")
    service: str = Field("api-gateway", description="This service's name.")
    services: dict[str, ServiceHealth] | None = Field(
        None, description="Each upstream service's state (shown to admin keys only)."
    )

    def public(self) -> HealthReport:
        """Up or down only: services' details (paths, database and broker errors) stay inside."""
        return HealthReport(status=self.status, service=self.service)


async def probe(client: httpx.AsyncClient, base_url: str, timeout: float) -> ServiceHealth:
    """Ask one service for its ``/health``; a silent or garbled service is unavailable."""
    try:
        response = await client.get(f"{base_url}/health", timeout=timeout)
    except httpx.TimeoutException:
        return ServiceHealth(status="unavailable", detail=f"no answer within {timeout:g} s")
    except httpx.HTTPError as exc:
        return ServiceHealth(status="unavailable", detail=f"cannot connect: {type(exc).__name__}")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("status"), str):
        return ServiceHealth(
            status="degraded" if response.is_success else "unavailable",
            detail=f"HTTP {response.status_code} without a health document",
        )
    if not response.is_success and body["status"] == "ok":
        # An error status outranks a body that says ok.
        body = {**body, "status": "degraded", "detail": f"HTTP {response.status_code}"}
    return ServiceHealth.model_validate(body)


async def check_services(
    client: httpx.AsyncClient, pools: Mapping[str, ReplicaPool], timeout: float
) -> HealthReport:
    """Probe every service (each replica of a replicated one) at once and combine the
    answers; the replicas' up/down state follows what they said."""
    names = list(pools)
    results = await asyncio.gather(*(pools[name].check(client, timeout) for name in names))
    services = dict(zip(names, results, strict=True))
    healthy = all(s.status == "ok" for s in services.values())
    return HealthReport(status="ok" if healthy else "degraded", services=services)


class HealthCache:
    """The last combined report, reused for ``ttl_seconds``; one refresh at a time."""

    def __init__(
        self,
        check: Callable[[], Awaitable[HealthReport]],
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._check = check
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._report: HealthReport | None = None
        self._taken_at = 0.0
        self._lock = asyncio.Lock()

    async def report(self) -> HealthReport:
        """A report no older than ``ttl_seconds``; concurrent callers wait for one refresh."""
        if self._fresh():
            assert self._report is not None
            return self._report
        async with self._lock:
            if not self._fresh():  # another caller may have refreshed it while this one waited
                self._report = await self._check()
                self._taken_at = self._clock()
            assert self._report is not None
            return self._report

    def _fresh(self) -> bool:
        return self._report is not None and self._clock() - self._taken_at < self.ttl_seconds
