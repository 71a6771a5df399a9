"""GET /health: 200 once the catalog is loaded (even if empty)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from emergify_recommender.api.deps import AppSettings, Feed, LiveCatalog
from emergify_recommender.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get(
    "/health",
    response_model=Health,
    name="health",
    summary="Readiness of the recommender",
    responses={503: {"model": Health, "description": "The catalog is not loaded yet."}},
)
async def health(catalog: LiveCatalog, feed: Feed, settings: AppSettings) -> JSONResponse:
    """Ready when the first catalog load succeeded; the change feed's state is a detail
    (the fallback poll keeps the catalog fresh without it)."""
    index = catalog.index
    if index is None:
        body = Health(
            status="starting",
            service="recommender",
            replica=settings.replica(),
            change_feed=feed.state,
            detail=catalog.last_error or "loading the catalog",
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=503)
    body = Health(
        status="ok",
        service="recommender",
        songs=len(index),
        model_version=index.model_version,
        table_version=index.table_version,
        replica=settings.replica(),
        change_feed=feed.state,
        detail=catalog.last_error,  # e.g. the last refresh failed: still serving the old index
    )
    return JSONResponse(body.model_dump(mode="json"))
