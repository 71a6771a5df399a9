"""The ingest service's HTTP routes."""

from fastapi import APIRouter

from emergify_ingest.api import feedback, health, songs

router = APIRouter()
router.include_router(songs.router)
router.include_router(feedback.router)
router.include_router(health.router)
