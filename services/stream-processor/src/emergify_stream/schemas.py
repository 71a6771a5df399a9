"""Request and response bodies of the admin app."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Health(BaseModel):
    """The service's state; 200 only when ``status`` is "ok"."""

    status: Literal["ok", "starting", "degraded", "stopped"]
    service: str = "stream-processor"
    query_id: str | None = Field(None, description="Streaming query id (stable per checkpoint).")
    error: str | None = Field(None, description="Why the service is degraded.")


class Lag(BaseModel):
    """Records on the songs topic that no committed micro-batch has covered yet."""

    topics: dict[str, int] = Field(description="Records behind, per topic.")
    total: int


class ModelSummary(BaseModel):
    """The current clustering model."""

    version: int
    k: int
    silhouette: float
    trained_at: datetime
    songs: int = Field(description="Songs in the catalog it was trained on.")


class StreamStatus(BaseModel):
    """The speed layer's progress and the batch layer's model."""

    query_id: str | None = Field(description="Streaming query id; changes with the checkpoint.")
    last_batch_id: int | None = Field(description="Last micro-batch id seen by the sink.")
    table_version: int = Field(description="Feature table version (monotonic).")
    songs: int = Field(description="Rows in the feature table.")
    lag: Lag | None = Field(description="Null until the first micro-batch of this run.")
    last_batch_at: datetime | None = Field(description="When the last micro-batch committed.")
    model: ModelSummary | None = Field(description="Null before the first model.")
    training: bool = Field(description="Whether a training run is under way.")
    training_queued: bool = Field(
        False, description="Whether another run starts when the current one ends."
    )
    training_error: str | None = Field(None, description="Why the last training run failed.")


class RetrainAccepted(BaseModel):
    """Answer to a retrain request."""

    status: Literal["started", "queued"] = Field(
        description="'started': a run starts now; 'queued': a run is under way, and another "
        "starts when it ends (with the songs that arrived meanwhile)."
    )
    detail: str
    songs: int = Field(description="Songs the run will train on (at its start).")
