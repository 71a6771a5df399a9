"""GET /api/v1/clusters: songs in the model's PCA plane, for plotting."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from emergify_contracts.problems import ProblemError, problem_responses
from emergify_recommender.api.deps import AppSettings, CurrentIndex
from emergify_recommender.api.schemas import Centroid, ClusterPoint, ClustersResponse
from emergify_recommender.projection import plane, sample_rows

router = APIRouter(tags=["clusters"])


@router.get(
    "/api/v1/clusters",
    response_model=ClustersResponse,
    name="get_clusters",
    summary="PCA 2-D coordinates and cluster of a sample of songs",
    responses=problem_responses(
        404,
        422,
        503,
        descriptions={
            404: "No model trained yet.",
            422: "Invalid sample size.",
            503: "The catalog is still loading.",
        },
    ),
)
def get_clusters(
    index: CurrentIndex,
    settings: AppSettings,
    sample: Annotated[int, Query(ge=1, description="Most songs to return.")] = 2000,
) -> ClustersResponse:
    """A deterministic sample (by a hash of the track id) with x, y = the first two PCA
    coordinates, plus the centroids in the same plane."""
    if sample > settings.max_clusters_sample:
        raise ProblemError(
            422,
            f"query.sample: must be <= {settings.max_clusters_sample}",
            title="Invalid request",
        )
    if index.model is None:
        raise ProblemError(
            404, "no model trained yet: there are no clusters to plot", title="No model"
        )
    rows = sample_rows(index, sample)
    xy = plane(index, rows)
    points = [
        ClusterPoint(
            track_id=index.track_id(r),
            name=index.name(r),
            x=float(x),
            y=float(y),
            cluster=int(index.clusters[r]),
        )
        for r, (x, y) in zip(rows.tolist(), xy, strict=True)
    ]
    width = min(2, index.model.centroids.shape[1])
    centroids = [
        Centroid(
            cluster=c,
            x=float(centroid[0]),
            y=float(centroid[1]) if width > 1 else 0.0,
        )
        for c, centroid in enumerate(index.model.centroids)
    ]
    return ClustersResponse(
        model_version=index.model.version, songs=len(index), points=points, centroids=centroids
    )
