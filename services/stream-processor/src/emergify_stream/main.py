"""The stream processor's admin app: health, status and retrain over HTTP, with the Spark
driver (speed layer + batch layer) running inside the same process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from emergify_contracts.internal_auth import guard_internal_service
from emergify_contracts.problems import (
    database_unavailable_problem,
    install_problem_handlers,
    operation_id,
)
from emergify_contracts.tables import UNREACHABLE_ERRORS
from emergify_stream.api import admin, health
from emergify_stream.config import Settings, get_settings
from emergify_stream.runtime import StreamRuntime


def create_app(settings: Settings | None = None, start_stream: bool = True) -> FastAPI:
    """Build the app; its lifespan starts Spark and the streaming query in the background
    (unless ``start_stream`` is False) and stops them on shutdown."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = StreamRuntime(settings)
        app.state.runtime = runtime
        if start_stream:
            runtime.start_background()
        try:
            yield
        finally:
            runtime.stop()

    app = FastAPI(
        title="Emergify stream processor",
        version="0.1.0",
        description="Speed layer (Kafka -> Spark -> feature table) and batch layer (Spark ML).",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    install_problem_handlers(
        app,
        service="stream processor",
        problems=dict.fromkeys(UNREACHABLE_ERRORS, database_unavailable_problem),
    )
    app.include_router(health.router)
    app.include_router(admin.router)
    guard_internal_service(app, settings, settings.stream_processor_url)
    return app
