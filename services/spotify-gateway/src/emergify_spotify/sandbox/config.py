"""Settings of the Spotify sandbox (environment prefix ``EMERGIFY_SPOTIFY_SANDBOX_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from emergify_contracts.settings import EmergifySettings


class SandboxSettings(EmergifySettings):
    """The sandbox's own settings: its demo app, token lifetimes and behaviour switches."""

    spotify_sandbox_url: str = Field(
        "http://127.0.0.1:8090", description="Where the sandbox listens."
    )
    spotify_sandbox_client_id: str = Field(
        "emergify-sandbox-client", description="Client ID of the sandbox's one registered app."
    )
    spotify_sandbox_client_secret: SecretStr = Field(
        SecretStr("emergify-sandbox-secret"), description="Its client secret (not a real secret)."
    )
    spotify_sandbox_redirect_uris: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8080/api/v1/spotify/callback"],
        description="Redirect URIs registered for the app (JSON list in the environment).",
    )
    spotify_sandbox_auto_approve: bool = Field(
        False, description="Skip the consent page: /authorize redirects back at once (tests)."
    )
    spotify_sandbox_access_token_seconds: int = Field(
        3600, gt=0, description="Lifetime of access tokens (Spotify: 3600)."
    )
    spotify_sandbox_rotate_refresh_tokens: bool = Field(
        True, description="Return a new refresh token on refresh and retire the old one."
    )
    spotify_sandbox_allow_audio_features: bool = Field(
        False, description="Serve /v1/audio-features (Spotify refuses new apps: 403)."
    )
    spotify_sandbox_catalog_csv: str = Field(
        "data/every_fresh_find.csv",
        description="Exportify CSV the demo listeners' songs come from.",
    )
    spotify_sandbox_liked_songs: int = Field(
        50, ge=0, description="Catalog songs each demo listener has liked."
    )
