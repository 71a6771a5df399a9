"""Request dependencies as typed aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from emergify_ingest.config import Settings
from emergify_ingest.ingestion import Ingestor


def get_ingestor(request: Request) -> Ingestor:
    """The app's :class:`Ingestor`."""
    return request.app.state.ingestor  # type: ignore[no-any-return]


def get_app_settings(request: Request) -> Settings:
    """The settings the app was created with."""
    return request.app.state.settings  # type: ignore[no-any-return]


IngestorDep = Annotated[Ingestor, Depends(get_ingestor)]
SettingsDep = Annotated[Settings, Depends(get_app_settings)]
