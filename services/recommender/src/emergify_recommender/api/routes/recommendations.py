"""POST /api/v1/recommendations: songs that sound like the seeds, under the playlist rules."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

import structlog
from fastapi import APIRouter, Header
from sqlalchemy.exc import SQLAlchemyError

from emergify_contracts.listener import CALLER_HEADER, effective_listener
from emergify_contracts.problems import problem_responses
from emergify_recommender import recommendation
from emergify_recommender.api.deps import AppSettings, CurrentIndex, Listeners, LiveCatalog
from emergify_recommender.api.schemas import RecommendationRequest, RecommendationResponse
from emergify_recommender.catalog import Catalog
from emergify_recommender.feature_table import load_genres
from emergify_recommender.listener_rules import ListenerPlan, plan_for
from emergify_recommender.recommendation import GenreLookup

log = structlog.get_logger()
router = APIRouter(tags=["recommendations"])

#: Who called, as the api-gateway says (absent for internal callers).
Caller = Annotated[str | None, Header(alias=CALLER_HEADER, include_in_schema=False)]


def listener_of(caller: str | None, body: RecommendationRequest) -> str | None:
    """The listener the request acts for, or None for an anonymous one: a signed-in listener
    always; otherwise only when the request names one or asks for a listener rule."""
    signed_in = caller is not None and caller.startswith("session:")
    if not signed_in and body.listener_id is None and not body.include_recent:
        return None
    return effective_listener(caller, body.listener_id)


def genres_in(catalog: Catalog) -> GenreLookup:
    """Genres from the feature table (the index holds none). When the database does not
    answer, the songs are served without genres rather than not at all: ranking needs only
    the index."""

    def lookup(track_ids: Iterable[str]) -> dict[str, tuple[str, ...]]:
        try:
            return load_genres(catalog.engine, track_ids)
        except SQLAlchemyError as exc:
            log.warning("recommendations: feature table unreachable", error=type(exc).__name__)
            return {}

    return lookup


@router.post(
    "/api/v1/recommendations",
    response_model=RecommendationResponse,
    name="recommend",
    summary="Recommend songs that sound like the seeds",
    responses=problem_responses(
        403,
        404,
        422,
        503,
        descriptions={
            403: "A signed-in listener named another listener.",
            404: "A seed is not in the catalog.",
            422: "Invalid request (or an API-key caller asked for listener rules without "
            "`listener_id`).",
            503: "The catalog is still loading.",
        },
    ),
)
def recommend(
    body: RecommendationRequest,
    index: CurrentIndex,
    settings: AppSettings,
    listeners: Listeners,
    catalog: LiveCatalog,
    caller: Caller = None,
) -> RecommendationResponse:
    """The songs nearest to the seeds (Manhattan distance on standardized features; with
    several seeds, to the nearest seed), exactly as a brute force would rank them, under
    the playlist rules; optionally diversified by artist. With a listener (the signed-in
    session, or `listener_id` for API-key callers): never their disliked songs or banned
    artists, their liked songs as extra seeds weighted by recency, and songs recommended
    to them recently skipped unless `include_recent`. Each item carries its genres and
    the ones it shares with its nearest seed, for information only."""
    listener_id = listener_of(caller, body)
    plan: ListenerPlan | None = None
    now = datetime.now(UTC)
    if listener_id is not None:
        plan = plan_for(
            index,
            listeners.get(listener_id, now),
            now,
            include_recent=body.include_recent,
            like_half_life_days=settings.like_half_life_days,
            like_limit=settings.like_seed_limit,
        )
    response = recommendation.recommend(
        index,
        body,
        default_max_popularity=settings.emerging_max_popularity,
        listener=plan,
        genres_of=genres_in(catalog),
    )
    if listener_id is not None:
        listeners.served(listener_id, [item.track_id for item in response.items], now)
    # Which replica answered is a fact of the serving process, not of the ranking.
    return response.model_copy(update={"replica": settings.replica()})
