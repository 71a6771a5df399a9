"""Includes every route module; nothing else."""

from __future__ import annotations

from fastapi import APIRouter

from emergify_recommender.api.routes import (
    catalog,
    clusters,
    health,
    listeners,
    model,
    recommendations,
    songs,
)

api_router = APIRouter()
for module in (health, recommendations, songs, catalog, model, clusters, listeners):
    api_router.include_router(module.router)
