"""``/admin/...``: the speed layer's status and the batch layer's retrain trigger."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, status

from emergify_contracts.problems import problem_responses
from emergify_stream.api.deps import Runtime
from emergify_stream.schemas import RetrainAccepted, StreamStatus
from emergify_stream.speed.feature_table import song_count

router = APIRouter(prefix="/admin", tags=["admin"])

_MIN_SONGS_TO_TRAIN = 3


@router.get(
    "/status",
    response_model=StreamStatus,
    responses=problem_responses(503, descriptions={503: "The database is unreachable."}),
)
def stream_status(runtime: Runtime) -> StreamStatus:
    """Query id, last micro-batch, table version, songs, lag, current model, training."""
    return StreamStatus.model_validate(runtime.status())


@router.post(
    "/retrain",
    response_model=RetrainAccepted,
    status_code=status.HTTP_202_ACCEPTED,
    responses=problem_responses(
        409,
        503,
        descriptions={
            409: "Too few songs to train a model.",
            503: "Spark is still starting, or the database is unreachable.",
        },
    ),
)
def retrain(runtime: Runtime) -> RetrainAccepted:
    """Start the batch layer now (in the background), or queue a run for when the current one
    ends; 202 either way, and ``status`` says which."""
    if runtime.spark is None:
        raise HTTPException(503, "the Spark session is still starting; try again in a few seconds")
    with runtime.engine.connect() as conn:
        songs = song_count(conn)
    if songs < _MIN_SONGS_TO_TRAIN and not runtime.trainer.running:
        raise HTTPException(
            409,
            f"the catalog has {songs} songs; a model needs at least {_MIN_SONGS_TO_TRAIN}. "
            "Upload songs first (POST /api/v1/songs).",
        )
    outcome = runtime.trainer.start("requested through POST /admin/retrain")
    detail = (
        "training started; GET /admin/status shows when the new model is current"
        if outcome == "started"
        else "a training run is under way; another starts when it ends"
    )
    return RetrainAccepted(status=outcome, detail=detail, songs=songs)
