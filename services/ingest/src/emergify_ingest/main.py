"""The ingest app: uploads in (JSON or CSV), master dataset and songs topic out."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from anyio import to_thread
from fastapi import FastAPI

from emergify_contracts.internal_auth import guard_internal_service
from emergify_contracts.problems import install_problem_handlers, operation_id
from emergify_ingest.api import router
from emergify_ingest.config import Settings, get_settings
from emergify_ingest.ingestion import Ingestor
from emergify_ingest.master_dataset import MasterDataset
from emergify_ingest.publisher import SongPublisher

log = structlog.get_logger()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the ingest app; ``settings`` default to the environment's.

    Raises ValueError for a lake URI this version cannot write (anything but a local path).
    """
    settings = settings or get_settings()
    dataset = MasterDataset(settings.lake_uri)
    publisher = SongPublisher(settings)
    # Process-wide: a field bigger than this is a row error instead of a memory problem.
    csv.field_size_limit(settings.max_field_bytes)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            await to_thread.run_sync(dataset.prepare)
        except OSError as exc:
            # Not fatal: /health reports it and uploads answer 503 until it is fixed.
            log.error(
                "master dataset directory cannot be created",
                path=str(dataset.root),
                error=repr(exc),
            )
        await publisher.start()
        log.info(
            "ingest started", lake=str(dataset.root), bootstrap=settings.kafka_bootstrap_servers
        )
        try:
            yield
        finally:
            await publisher.stop()

    app = FastAPI(
        title="Emergify ingest",
        version="0.1.0",
        summary="Song uploads (JSON or CSV) into the master dataset and the songs topic.",
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings
    app.state.ingestor = Ingestor(settings, dataset, publisher)
    install_problem_handlers(app, service="ingest service")
    app.include_router(router)
    guard_internal_service(app, settings, settings.ingest_url)
    return app
