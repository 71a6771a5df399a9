"""``python -m emergify_gateway``: run the API gateway on the host and port of its URL setting."""

from __future__ import annotations

import sys
from typing import Any

import httpx
import uvicorn

from emergify_contracts.logs import configure_logging
from emergify_gateway.config import Settings, get_settings
from emergify_gateway.main import create_app
from emergify_gateway.security import AuthNotConfiguredError


def main() -> None:
    """Serve the gateway on the port of ``EMERGIFY_GATEWAY_URL``, listening on
    ``EMERGIFY_BIND_HOST`` when set (containers: 0.0.0.0), else on the URL's host."""
    settings = get_settings()
    configure_logging("api-gateway", settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except AuthNotConfiguredError as exc:
        sys.exit(f"api-gateway refuses to start: {exc}")
    uvicorn.run(app, **uvicorn_options(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the gateway (tests serve it the same way)."""
    url = httpx.URL(settings.gateway_url)
    return {
        "host": settings.bind_host or url.host or "127.0.0.1",
        "port": url.port or 8080,
        "log_config": None,  # keep the structlog setup
        "access_log": False,  # the gateway logs one line per request itself, with the request id
        # uvicorn would otherwise take the client address from X-Forwarded-For sent by any
        # local process; the gateway decides whom to believe (the trusted_proxies setting).
        "proxy_headers": False,
    }


if __name__ == "__main__":
    main()
