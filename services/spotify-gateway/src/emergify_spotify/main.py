"""The spotify-gateway app: Spotify sign-in, the listener's profile, playlist export.

Without Spotify credentials (or the session secret and token key) every Spotify route answers
503 naming the settings to set, and /health stays 200 with ``spotify_configured: false``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import structlog
from fastapi import FastAPI

import emergify_contracts.spotify_tables  # noqa: F401 - registers the tables on the metadata
from emergify_contracts.internal_auth import guard_internal_service, internal_headers
from emergify_contracts.problems import install_problem_handlers, operation_id
from emergify_contracts.tables import create_tables, make_engine
from emergify_spotify.api import auth, health, listener, loop, playlists
from emergify_spotify.api.deps import Services
from emergify_spotify.config import Settings, get_settings
from emergify_spotify.living_refresh import RefreshScheduler

log = structlog.get_logger()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the environment's."""
    settings = settings or get_settings()
    services = Services(settings=settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        try:
            create_tables(engine)
            services.open_stores(engine)
        except Exception as exc:  # the rest of Emergify works without us: report, don't die
            services.database_error = f"{type(exc).__name__}: {exc}"
            log.error("database unusable", error=services.database_error)
        missing = settings.missing_settings()
        if missing:
            log.warning("spotify not configured; its routes answer 503", missing=missing)
        services.recommender = httpx.Client(
            base_url=settings.recommender_url,
            headers=internal_headers(settings),
            timeout=settings.recommender_timeout_seconds,
            trust_env=False,
            # Under the recommender's keep-alive (uvicorn: 5 s), so an idle connection is
            # never reused just as the recommender closes it (a spurious failed lookup).
            limits=httpx.Limits(keepalive_expiry=2.0),
        )
        worker = services.sync if settings.living_sync_enabled else None
        if worker is not None:
            worker.start()
            assert services.living is not None and services.tokens is not None
            assert services.publisher is not None
            services.refresher = RefreshScheduler(
                settings,
                services.living,
                services.tokens,
                services.recommender,
                worker,
                services.publisher,
            )
            services.refresher.start()
        try:
            yield
        finally:
            if services.refresher is not None:
                await services.refresher.stop()
            if worker is not None:
                await worker.stop()
            if services.publisher is not None:
                await services.publisher.close()
            services.recommender.close()
            engine.dispose()

    app = FastAPI(
        title="Emergify spotify-gateway",
        version="1.0.0",
        summary="Spotify sign-in, the listener's profile and playlist export.",
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.services = services
    install_problem_handlers(app, service="spotify-gateway")
    for module in (health, auth, listener, playlists, loop):
        app.include_router(module.router)
    guard_internal_service(app, settings, settings.spotify_gateway_url)
    return app
