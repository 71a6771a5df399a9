"""``GET /health``."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emergify_stream.api.deps import Runtime
from emergify_stream.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    responses={503: {"model": Health, "description": "Starting, degraded or stopping."}},
)
def health(runtime: Runtime) -> JSONResponse:
    """200 once the streaming query runs; 503 while starting or if the query died."""
    state, error = runtime.state()
    query = runtime.layer.query if runtime.layer else None
    body = Health(status=state, query_id=str(query.id) if query else None, error=error)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if state == "ok" else 503)
