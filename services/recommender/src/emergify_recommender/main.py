"""The recommender app: the serving layer of Emergify.

At start it loads the catalog (feature table + current model) into memory, then keeps it
fresh from two sources: the Kafka change feed (catalog changes, new models) and a fallback
poll of the database. Neither failing stops the app.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI

from emergify_contracts.internal_auth import guard_internal_service, internal_headers
from emergify_contracts.problems import (
    ProblemError,
    database_unavailable_problem,
    install_problem_handlers,
    operation_id,
)
from emergify_contracts.tables import UNREACHABLE_ERRORS, make_engine
from emergify_recommender.api.main import api_router
from emergify_recommender.artist_vectors import Similarity
from emergify_recommender.catalog import Catalog, CatalogNotReady
from emergify_recommender.change_feed import ChangeFeed
from emergify_recommender.config import Settings, get_settings
from emergify_recommender.listener_feed import ListenerFeed
from emergify_recommender.listeners import ListenerStates
from emergify_recommender.living import LivingPlaylists

log = structlog.get_logger()


def catalog_not_ready(exc: Exception) -> ProblemError:
    """The 503 for a request that arrives before the first catalog load has finished."""
    return ProblemError(
        503, f"{exc}; retry shortly.", title="Catalog not ready", headers={"Retry-After": "2"}
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; ``settings`` defaults to the environment's."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        catalog = Catalog(
            engine,
            Similarity(settings.similarity_artist_weight, settings.similarity_multi_artist_rule),
            snapshot_path=Path(settings.index_snapshot_path)
            if settings.index_snapshot_path
            else None,
        )
        living = LivingPlaylists(settings, engine)
        feed = ChangeFeed(settings, catalog, on_change=living.on_catalog_change)
        app.state.catalog, app.state.change_feed = catalog, feed
        app.state.listeners = ListenerStates(engine, settings.recent_days)
        app.state.listener_feed = ListenerFeed(settings, app.state.listeners)
        app.state.living = living
        app.state.http = httpx.AsyncClient(headers=internal_headers(settings))
        # The ranking kernel is compiled (or loaded from its disk cache) for each index's own
        # array types before that index serves: Catalog._swap calls ranking.warm.
        try:
            await catalog.reload("start")
        except Exception as exc:
            # Not fatal: /health says 503 and the poll retries until the database answers.
            log.warning(
                "initial catalog load failed; retrying in the background",
                error=f"{type(exc).__name__}: {exc}",
            )
        tasks = [
            asyncio.create_task(feed.run(), name="change-feed"),
            asyncio.create_task(app.state.listener_feed.run(), name="listener-feed"),
            asyncio.create_task(
                catalog.poll_forever(settings.refresh_interval_seconds), name="catalog-poll"
            ),
            asyncio.create_task(living.run(lambda: catalog.index), name="living-playlists"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await app.state.http.aclose()
            engine.dispose()

    app = FastAPI(
        title="Emergify recommender",
        version="0.1.0",
        summary="The serving layer: recommendations, catalog and model, from memory.",
        generate_unique_id_function=operation_id,
        lifespan=lifespan,
    )
    app.state.settings = settings
    install_problem_handlers(
        app,
        service="recommender",
        problems={
            CatalogNotReady: catalog_not_ready,
            # Most requests are served from memory; those that need the database get a 503.
            **dict.fromkeys(UNREACHABLE_ERRORS, database_unavailable_problem),
        },
    )
    app.include_router(api_router)
    guard_internal_service(app, settings, settings.recommender_url)
    return app
