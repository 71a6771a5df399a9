"""The system's health: every upstream service's ``/health``, asked concurrently."""

from __future__ import annotations

import asyncio
from typing import Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field


class ServiceHealth(BaseModel):
    """One service's state as it reported it (its own details are kept as extra members)."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description="ok, starting, degraded, or unavailable (did not answer).")
    detail: str | None = Field(None, description="Why the service is not ok, when known.")


class HealthReport(BaseModel):
    """The gateway's health: ok only when every service is ok."""

    status: Literal["ok", "degraded"] = Field(description="ok when every service is ok.")
    service: str = Field("api-gateway", description="This service's name.")
    services: dict[str, ServiceHealth] = Field(description="Each upstream service's state.")


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
    client: httpx.AsyncClient, urls: dict[str, str], timeout: float
) -> HealthReport:
    """Probe every service at once and combine the answers."""
    names = list(urls)
    results = await asyncio.gather(*(probe(client, urls[name], timeout) for name in names))
    services = dict(zip(names, results, strict=True))
    healthy = all(s.status == "ok" for s in services.values())
    return HealthReport(status="ok" if healthy else "degraded", services=services)
