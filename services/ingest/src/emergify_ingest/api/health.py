"""``GET /health``: ready when the Kafka producer is connected and the lake is writable."""

from __future__ import annotations

from typing import Literal

from anyio import to_thread
from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from emergify_ingest.api.deps import IngestorDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    """The service's readiness and why it is not ready."""

    status: Literal["ok", "starting", "degraded"]
    service: str = "ingest"
    kafka: str = Field(description="'connected', or what is wrong with the broker connection.")
    lake: str = Field(description="'writable', or why the master dataset cannot be written.")
    lake_path: str = Field(description="The master dataset's directory.")
    songs_topic: str


@router.get(
    "/health",
    name="health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Starting or degraded."}},
)
async def health(ingestor: IngestorDep, response: Response) -> Health:
    """200 when uploads can be accepted, 503 (starting or degraded) otherwise."""
    kafka_problem = await ingestor.publisher.probe()
    lake_problem = await to_thread.run_sync(ingestor.dataset.check_writable)
    if kafka_problem is None and lake_problem is None:
        status = "ok"
    elif not ingestor.publisher.connected and lake_problem is None:
        status = "starting"
    else:
        status = "degraded"
    if status != "ok":
        response.status_code = 503
    return Health(
        status=status,
        kafka=kafka_problem or "connected",
        lake=lake_problem or "writable",
        lake_path=str(ingestor.dataset.root),
        songs_topic=ingestor.settings.songs_topic,
    )
