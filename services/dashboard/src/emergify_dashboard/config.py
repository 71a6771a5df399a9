"""Settings of the dashboard (environment prefix ``EMERGIFY_``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from emergify_contracts.settings import EmergifySettings

# `emergify up` writes this into .env.example; it is never a usable key.
_PLACEHOLDER = "generated-on-first-run"


class Settings(EmergifySettings):
    """Everything the dashboard needs; it talks only to the API gateway (``gateway_url``)."""

    dashboard_api_key: SecretStr | None = Field(
        None,
        description="The dashboard's own key (scope recs:read), which the gateway also knows; "
        "`emergify up` generates it. Never the admin key: the dashboard does not fall back to it.",
    )
    dashboard_public_gateway_url: str | None = Field(
        None,
        description="The gateway as the listener's browser reaches it, for links such as "
        "Sign in with Spotify; unset: gateway_url. Containers need it (gateway_url is then an "
        "in-network name). It must share the dashboard's host so the session cookie reaches both.",
    )
    dashboard_uploads: bool = Field(
        False,
        description="Offer the CSV upload: to a signed-in listener (the gateway must have the "
        "same setting on) or to a viewer who types a catalog:write key. Off by default.",
    )
    dashboard_timeout_seconds: float = Field(
        30.0, gt=0, description="Timeout of the dashboard's gateway calls."
    )
    dashboard_upload_timeout_seconds: float = Field(
        300.0, gt=0, description="Timeout of a CSV upload through the gateway."
    )
    dashboard_max_upload_mb: int = Field(
        50, ge=1, description="Largest CSV the upload widget accepts, in MB."
    )
    dashboard_clusters_sample: int = Field(
        5000, ge=100, description="Most songs drawn on the cluster map."
    )

    def gateway_key(self) -> str | None:
        """The key for gateway calls: ``dashboard_api_key`` alone (never the admin key)."""
        if self.dashboard_api_key is not None:
            key = self.dashboard_api_key.get_secret_value().strip()
            if key and key != _PLACEHOLDER:
                return key
        return None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
