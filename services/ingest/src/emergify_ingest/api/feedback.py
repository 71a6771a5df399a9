"""``POST /api/v1/feedback`` and ``DELETE /api/v1/listeners/{listener_id}/feedback``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict, Field

from emergify_contracts.listener import (
    CALLER_HEADER,
    FeedbackEvent,
    FeedbackSignal,
    effective_listener,
)
from emergify_contracts.problems import ProblemError, problem_responses
from emergify_contracts.song import TRACK_ID_RE
from emergify_ingest.api.deps import IngestorDep, SettingsDep
from emergify_ingest.feedback import accept_feedback
from emergify_ingest.publisher import BrokerUnavailable

router = APIRouter(prefix="/api/v1", tags=["feedback"])
Caller = Annotated[str | None, Header(alias=CALLER_HEADER, include_in_schema=False)]


class FeedbackRequest(BaseModel):
    """What a listener says about a song."""

    model_config = ConfigDict(extra="forbid")

    track_id: str = Field(pattern=TRACK_ID_RE.pattern, examples=["70kFiCsoYnJxMgIZ82WQmj"])
    signal: Literal["like", "dislike", "ban_artist", "skip"] = Field(
        description="like: a seed from now on; dislike: never this song again; ban_artist: "
        "never its artists again; skip: kept, not yet used for ranking."
    )
    listener_id: str | None = Field(
        None,
        description="Required with an API key: your own id for the listener (namespaced by "
        "your key). Omit when signed in with Spotify.",
    )


class FeedbackAccepted(BaseModel):
    """The event, accepted: in the master dataset and on the feedback topic."""

    event_id: str
    listener_id: str = Field(description="The listener as Emergify stores them.")
    track_id: str | None
    signal: str
    at: datetime


def _accepted(event: FeedbackEvent) -> FeedbackAccepted:
    return FeedbackAccepted(
        event_id=event.event_id,
        listener_id=event.listener_id,
        track_id=event.track_id,
        signal=event.signal.value,
        at=event.at,
    )


async def _accept(
    event: FeedbackEvent, ingestor: IngestorDep, settings: SettingsDep
) -> FeedbackAccepted:
    """Keep ``event`` in the lake, publish it, and answer what was accepted (503 while the
    broker is away)."""
    try:
        await accept_feedback(
            event, ingestor.feedback_lake, ingestor.publisher, settings.feedback_topic
        )
    except BrokerUnavailable as exc:
        raise ProblemError(
            503, f"feedback could not be published: {exc}", headers={"Retry-After": "5"}
        ) from None
    return _accepted(event)


@router.post(
    "/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    summary="Tell Emergify what a listener thinks of a song",
    responses=problem_responses(403, 422, 503),
)
async def post_feedback(
    body: FeedbackRequest, ingestor: IngestorDep, settings: SettingsDep, caller: Caller = None
) -> FeedbackAccepted:
    listener = effective_listener(caller, body.listener_id)
    event = FeedbackEvent(
        listener_id=listener, track_id=body.track_id, signal=FeedbackSignal(body.signal)
    )
    return await _accept(event, ingestor, settings)


@router.delete(
    "/listeners/{listener_id}/feedback",
    status_code=202,
    response_model=FeedbackAccepted,
    summary="Erase what Emergify keeps about a listener (feedback and history)",
    responses=problem_responses(403, 422, 503),
)
async def erase_feedback(
    listener_id: str, ingestor: IngestorDep, settings: SettingsDep, caller: Caller = None
) -> FeedbackAccepted:
    listener = effective_listener(caller, listener_id)
    event = FeedbackEvent(listener_id=listener, track_id=None, signal=FeedbackSignal.ERASE)
    return await _accept(event, ingestor, settings)
