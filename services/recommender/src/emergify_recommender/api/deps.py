"""Request dependencies as typed aliases, so route signatures read like sentences."""

from __future__ import annotations

from typing import Annotated

import httpx
from fastapi import Depends, Request

from emergify_recommender.catalog import Catalog
from emergify_recommender.change_feed import ChangeFeed
from emergify_recommender.config import Settings
from emergify_recommender.index import SongIndex
from emergify_recommender.listeners import ListenerStates


def get_catalog(request: Request) -> Catalog:
    """The app's live catalog."""
    return request.app.state.catalog


def get_index(request: Request) -> SongIndex:
    """The current index, taken once for the whole request (503 before the first load)."""
    return get_catalog(request).require()


def get_settings_dep(request: Request) -> Settings:
    """The settings the app was built with."""
    return request.app.state.settings


def get_http(request: Request) -> httpx.AsyncClient:
    """The shared HTTP client for calls to other services."""
    return request.app.state.http


def get_change_feed(request: Request) -> ChangeFeed:
    """The Kafka change-feed consumer."""
    return request.app.state.change_feed


def get_listener_states(request: Request) -> ListenerStates:
    """The cached listener states (dislikes, bans, likes, recent songs)."""
    return request.app.state.listeners


LiveCatalog = Annotated[Catalog, Depends(get_catalog)]
CurrentIndex = Annotated[SongIndex, Depends(get_index)]
AppSettings = Annotated[Settings, Depends(get_settings_dep)]
HttpClient = Annotated[httpx.AsyncClient, Depends(get_http)]
Feed = Annotated[ChangeFeed, Depends(get_change_feed)]
Listeners = Annotated[ListenerStates, Depends(get_listener_states)]
