"""The speed layer's lag, as the stream processor reports it on ``GET /admin/status``."""

from __future__ import annotations

import httpx
import structlog

log = structlog.get_logger()


async def fetch_lag(
    client: httpx.AsyncClient, stream_processor_url: str, timeout: float
) -> int | None:
    """Records the speed layer still has to apply (``lag.total``), or None when the stream
    processor does not answer in ``timeout`` seconds or answers something else."""
    url = stream_processor_url.rstrip("/") + "/admin/status"
    try:
        response = await client.get(url, timeout=timeout)
        response.raise_for_status()
        total = response.json()["lag"]["total"]
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        log.debug("speed layer status unavailable", url=url, error=f"{type(exc).__name__}: {exc}")
        return None
    if isinstance(total, bool) or not isinstance(total, int | float):
        return None
    return int(total)
