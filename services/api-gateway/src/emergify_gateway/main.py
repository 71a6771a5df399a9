"""Builds the API gateway app: routing table, security, problems, merged OpenAPI, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import structlog
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from emergify_contracts.internal_auth import (
    InternalAuthNotConfiguredError,
    guard_public_service,
    internal_token,
)
from emergify_contracts.problems import install_problem_handlers, operation_id
from emergify_gateway.api import DOCS_ASSETS, add_proxy_routes, router
from emergify_gateway.config import Settings, get_settings
from emergify_gateway.deps import Gateway
from emergify_gateway.health import HealthCache, check_services
from emergify_gateway.openapi import OpenAPIAggregator
from emergify_gateway.proxy import Proxy, new_http_client
from emergify_gateway.rate_limit import TokenBucketLimiter
from emergify_gateway.replicas import ReplicaMonitor
from emergify_gateway.request_body import RequestBodyMiddleware
from emergify_gateway.request_context import (
    REQUEST_ID_HEADER,
    RequestContextMiddleware,
    problem_context,
)
from emergify_gateway.routes import ROUTES, body_limit
from emergify_gateway.security import API_KEY_HEADER, AuthNotConfiguredError, KeyRing
from emergify_gateway.security_headers import SecurityHeadersMiddleware

log = structlog.get_logger()

DESCRIPTION = """Playlists of emerging artists that sound like the songs you love.

Send an API key as `X-API-Key: <key>` or `Authorization: Bearer <key>`. Keys carry scopes:
`recs:read` (recommendations, search, catalog, clusters, model, Spotify), `catalog:write`
(uploads) and `admin` (retraining, key management; implies the others). Each operation names
the scope it needs (`x-emergify-scope`); a key without it gets 403. Errors are
`application/problem+json` (RFC 9457) and carry the request's `X-Request-ID`."""


def swagger_ui_assets() -> Path:
    """The folder of Swagger UI's JavaScript, CSS and icon inside the fastapi-offline package."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def create_app(settings: Settings | None = None) -> FastAPI:
    """The gateway app. Raises :class:`~emergify_gateway.security.AuthNotConfiguredError`
    when no admin key is configured and ``allow_no_auth`` is off, or no internal token is."""
    settings = settings or get_settings()
    keys = KeyRing.from_settings(settings)
    try:
        internal_token(settings)  # every upstream refuses the gateway without it
    except InternalAuthNotConfiguredError as exc:
        raise AuthNotConfiguredError(str(exc)) from None
    gateway = Gateway(
        settings=settings,
        keys=keys,
        limiter=TokenBucketLimiter(settings.rate_limit_per_minute, settings.rate_limit_burst),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if gateway.keys.open:
            log.warning("no admin key configured: every caller is an admin (allow_no_auth)")
        log.info("api keys", key_file=str(settings.api_keys_file))
        async with new_http_client(settings) as client:
            gateway.proxy = Proxy(client, settings)
            gateway.openapi = OpenAPIAggregator(
                base=app.openapi,
                client=client,
                urls=gateway.proxy.urls,
                routes=ROUTES,
                timeout=settings.probe_timeout_seconds,
                ttl_seconds=settings.openapi_cache_seconds,
            )
            proxy = gateway.proxy
            gateway.health = HealthCache(
                lambda: check_services(proxy.client, proxy.pools, settings.probe_timeout_seconds),
                settings.health_cache_seconds,
            )
            monitor = ReplicaMonitor(
                proxy.pools,
                client,
                settings.replica_check_interval_seconds,
                settings.probe_timeout_seconds,
            )
            monitor.start()
            try:
                yield
            finally:
                await monitor.stop()
                gateway.proxy = gateway.openapi = gateway.health = None

    app = FastAPI(
        title="Emergify API",
        version="1.0.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        # The public document is the merged one served by the gateway's own /openapi.json.
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        generate_unique_id_function=operation_id,
    )
    app.state.gateway = gateway
    # Unexpected errors are answered by RequestContextMiddleware, which sits outside these
    # handlers and also logs the request.
    install_problem_handlers(
        app,
        service="API gateway",
        not_found="{path} is not an Emergify API path; the list is at /docs",
        context=problem_context,
    )
    app.include_router(router)
    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_assets()), name="docs-assets")
    add_proxy_routes(app, ROUTES)
    app.add_middleware(
        RequestBodyMiddleware,
        limit_for=lambda method, path: body_limit(settings, method, path),
        deadline_seconds=settings.request_deadline_seconds,
        linger_seconds=settings.linger_seconds,
        linger_max_bytes=settings.linger_max_bytes,
    )
    # Added last = outermost: every response, CORS preflights included, gets a request id.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=[settings.dashboard_origin],
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        allow_headers=["Authorization", API_KEY_HEADER, "Content-Type", REQUEST_ID_HEADER],
        expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
    )
    app.add_middleware(RequestContextMiddleware)
    # DNS rebinding: a page under another name that resolves to our address is refused.
    guard_public_service(app, settings, settings.gateway_url)
    # Outermost of all: the headers reach every response, the last-resort 500 included.
    app.add_middleware(SecurityHeadersMiddleware, force_hsts=settings.force_hsts)
    return app
