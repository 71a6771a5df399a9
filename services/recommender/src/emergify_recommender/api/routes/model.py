"""GET /api/v1/model: the clustering model in use."""

from __future__ import annotations

from fastapi import APIRouter

from emergify_contracts.problems import ProblemError, problem_responses
from emergify_recommender.api.deps import CurrentIndex
from emergify_recommender.api.schemas import ModelInfo, SimilarityInfo
from emergify_recommender.artist_vectors import DEFAULT_SIMILARITY, Similarity

router = APIRouter(tags=["model"])


@router.get(
    "/api/v1/model",
    response_model=ModelInfo,
    name="get_model",
    summary="The current clustering model",
    responses=problem_responses(
        404,
        503,
        descriptions={404: "No model trained yet.", 503: "The catalog is still loading."},
    ),
)
def get_model(index: CurrentIndex) -> ModelInfo:
    """Version, k, silhouette, training metrics and the similarity setting (artist weight,
    multi-artist rule) of the model the recommender uses."""
    if index.model is None:
        raise ProblemError(
            404,
            "no model trained yet: the batch layer trains one once enough songs are in the "
            "catalog, or now with POST /api/v1/model/retrain",
            title="No model",
        )
    m = index.model.portable
    similarity = index.similarity or Similarity.of_model(index.model.metrics, DEFAULT_SIMILARITY)
    return ModelInfo(
        version=m.version,
        k=m.k,
        silhouette=m.silhouette,
        features=list(m.features),
        trained_at=m.trained_at,
        songs=m.songs,
        metrics=dict(index.model.metrics),
        explained_variance=list(m.explained_variance),
        similarity=SimilarityInfo(**similarity.as_dict()),
    )
