"""GET /api/v1/listeners/{listener_id}/feedback: what Emergify keeps of a listener's feedback.

(Erasing it, ``DELETE`` on the same path, is the ingest service's: it publishes an erase.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Header

from emergify_contracts.listener import CALLER_HEADER, effective_listener
from emergify_contracts.problems import problem_responses
from emergify_recommender.api.deps import Listeners
from emergify_recommender.api.schemas import FeedbackItemOut, ListenerFeedback
from emergify_recommender.listeners import load_state

router = APIRouter(tags=["listeners"])

Caller = Annotated[str | None, Header(alias=CALLER_HEADER, include_in_schema=False)]


@router.get(
    "/api/v1/listeners/{listener_id}/feedback",
    response_model=ListenerFeedback,
    name="listener_feedback",
    summary="A listener's stored feedback, newest first",
    responses=problem_responses(
        403,
        422,
        503,
        descriptions={
            403: "A signed-in listener named another listener.",
            422: "Invalid listener id.",
            503: "The database is unreachable.",
        },
    ),
)
def listener_feedback(
    listener_id: str, listeners: Listeners, caller: Caller = None
) -> ListenerFeedback:
    """Every feedback event Emergify keeps for the listener (`me`: the signed-in one),
    newest first. Read from the database, not the cache: this is what is stored."""
    listener = effective_listener(caller, listener_id)
    now = datetime.now(UTC)
    state = load_state(listeners.engine, listener, now, listeners.recent_days)
    items = [
        FeedbackItemOut(event_id=e.event_id, track_id=e.track_id, signal=e.signal, at=e.at)
        for e in reversed(state.events)
    ]
    return ListenerFeedback(listener_id=listener, items=items, count=len(items))
