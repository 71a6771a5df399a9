"""POST /api/v1/recommendations: songs that sound like the seeds, under the playlist rules."""

from __future__ import annotations

from fastapi import APIRouter

from emergify_contracts.problems import problem_responses
from emergify_recommender import recommendation
from emergify_recommender.api.deps import AppSettings, CurrentIndex
from emergify_recommender.api.schemas import RecommendationRequest, RecommendationResponse

router = APIRouter(tags=["recommendations"])


@router.post(
    "/api/v1/recommendations",
    response_model=RecommendationResponse,
    name="recommend",
    summary="Recommend songs that sound like the seeds",
    responses=problem_responses(
        404,
        422,
        503,
        descriptions={
            404: "A seed is not in the catalog.",
            422: "Invalid request.",
            503: "The catalog is still loading.",
        },
    ),
)
def recommend(
    body: RecommendationRequest, index: CurrentIndex, settings: AppSettings
) -> RecommendationResponse:
    """The songs nearest to the seeds (Manhattan distance on standardized features; with
    several seeds, to the nearest seed), exactly as a brute force would rank them, under
    the playlist rules; optionally diversified by artist."""
    answer = recommendation.recommend(
        index, body, default_max_popularity=settings.emerging_max_popularity
    )
    # Which replica answered is a fact of the serving process, not of the ranking.
    return answer.model_copy(update={"replica": settings.replica()})
