"""What routes need, as typed FastAPI dependencies (so signatures read like sentences)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import httpx
from fastapi import Depends, Request
from sqlalchemy.engine import Engine

from emergify_contracts import session
from emergify_contracts.problems import ProblemError
from emergify_spotify.catalog import Catalog
from emergify_spotify.config import Settings
from emergify_spotify.living import ChangePublisher, LivingStore
from emergify_spotify.living_refresh import RefreshScheduler
from emergify_spotify.living_sync import SyncWorker
from emergify_spotify.oauth import StateStore
from emergify_spotify.playlist import IdempotencyLedger
from emergify_spotify.spotify_api import SIGN_IN_AGAIN, SpotifyApi
from emergify_spotify.tokens import TokenCipher, TokenStore


@dataclass
class Services:
    """The app's long-lived parts; the stores exist only when Spotify is configured."""

    settings: Settings
    engine: Engine | None = None
    recommender: httpx.Client | None = None
    tokens: TokenStore | None = None
    states: StateStore | None = None
    ledger: IdempotencyLedger | None = None
    living: LivingStore | None = None
    sync: SyncWorker | None = None
    publisher: ChangePublisher | None = None
    refresher: RefreshScheduler | None = None
    database_error: str | None = None

    def open_stores(self, engine: Engine) -> None:
        """Build the token, state and idempotency stores on ``engine``."""
        self.engine = engine
        key = self.settings.token_encryption_key
        if self.settings.spotify_configured and key is not None:
            cipher = TokenCipher(key.get_secret_value())
            self.tokens = TokenStore(engine, cipher)
            self.states = StateStore(engine, cipher)
            self.ledger = IdempotencyLedger(engine)
            self.living = LivingStore(engine)
            self.sync = SyncWorker(self.settings, self.living, self.tokens)
            self.publisher = ChangePublisher(self.settings)


def get_services(request: Request) -> Services:
    return request.app.state.services


AppServices = Annotated[Services, Depends(get_services)]


def spotify_ready(services: AppServices) -> Services:
    """The services, or a 503 problem naming the settings to set."""
    missing = services.settings.missing_settings()
    if missing:
        raise ProblemError(
            503,
            f"Spotify is not configured: set {', '.join(missing)} "
            "(see services/spotify-gateway/README.md; `emergify up` generates the session "
            "secret and the encryption key).",
            title="Spotify unavailable",
            headers={"Retry-After": "3600"},
            missing_settings=missing,
        )
    if services.tokens is None:
        raise ProblemError(
            503,
            f"the spotify-gateway cannot use its database: {services.database_error}",
            title="Spotify unavailable",
            headers={"Retry-After": "10"},
        )
    return services


ReadyServices = Annotated[Services, Depends(spotify_ready)]


def listener_id(request: Request, services: ReadyServices) -> str:
    """The signed-in listener's Spotify id, from the signed session cookie."""
    secret = services.settings.session_secret
    assert secret is not None
    listener = session.verify(
        request.cookies.get(session.SESSION_COOKIE), services.settings.session_secrets()
    )
    if listener is None:
        raise ProblemError(
            401,
            f"no valid Emergify session (missing, expired or forged cookie); {SIGN_IN_AGAIN}",
        )
    return listener


ListenerId = Annotated[str, Depends(listener_id)]


def listener_api(services: ReadyServices, listener: ListenerId) -> SpotifyApi:
    """The Spotify Web API as the signed-in listener."""
    assert services.tokens is not None
    return SpotifyApi(services.settings, services.tokens, listener)


ListenerApi = Annotated[SpotifyApi, Depends(listener_api)]


def catalog(services: AppServices) -> Catalog:
    """The recommender's catalog."""
    assert services.recommender is not None
    return Catalog(services.recommender)


CatalogDep = Annotated[Catalog, Depends(catalog)]
