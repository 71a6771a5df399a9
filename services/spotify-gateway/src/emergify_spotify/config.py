"""Settings of the spotify-gateway service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import SecretStr

from emergify_contracts.settings import EmergifySettings


class Settings(EmergifySettings):
    spotify_client_id: str | None = None
    spotify_client_secret: SecretStr | None = None
    spotify_redirect_uri: str = "http://127.0.0.1:8080/api/v1/spotify/callback"
    spotify_accounts_url: str = "https://accounts.spotify.com"
    spotify_api_url: str = "https://api.spotify.com/v1"

    @property
    def spotify_configured(self) -> bool:
        return bool(self.spotify_client_id and self.spotify_client_secret)


@lru_cache
def get_settings() -> Settings:
    return Settings()
