"""GET /api/v1/catalog: size, versions and freshness of what the serving layer holds."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from emergify_contracts.problems import problem_responses
from emergify_recommender.api.deps import AppSettings, CurrentIndex, HttpClient
from emergify_recommender.api.schemas import CatalogStatus, Freshness, SpeedLayer
from emergify_recommender.speed_layer import fetch_lag

router = APIRouter(tags=["catalog"])


@router.get(
    "/api/v1/catalog",
    response_model=CatalogStatus,
    name="get_catalog",
    summary="Catalog size, versions, freshness and speed-layer lag",
    responses=problem_responses(503, descriptions={503: "The catalog is still loading."}),
)
async def get_catalog(
    index: CurrentIndex, settings: AppSettings, http: HttpClient
) -> CatalogStatus:
    """What the recommender serves now; the lag comes from the stream processor (null when it
    does not answer within the timeout)."""
    lag = await fetch_lag(http, settings.stream_processor_url, settings.speed_layer_timeout_seconds)
    last_batch = index.last_batch_at or index.last_update
    since = (datetime.now(UTC) - last_batch).total_seconds() if last_batch else None
    return CatalogStatus(
        songs=len(index),
        last_update=index.last_update,
        table_version=index.table_version,
        model_version=index.model_version,
        model_trained_at=index.model.portable.trained_at if index.model else None,
        freshness=Freshness(
            last_batch_at=last_batch,
            seconds_since_last_batch=None if since is None else round(max(since, 0.0), 3),
        ),
        speed_layer=None if lag is None else SpeedLayer(lag=lag),
    )
