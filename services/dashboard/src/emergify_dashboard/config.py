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
        description="Key the dashboard sends to the gateway. Unset: the admin key, so the "
        "local stack works. A public deployment should give it a read-only key "
        "(EMERGIFY_READ_API_KEYS) and set EMERGIFY_DASHBOARD_UPLOADS=false.",
    )
    dashboard_public_gateway_url: str | None = Field(
        None,
        description="The gateway as the listener's browser reaches it, for links such as "
        "Sign in with Spotify; unset: gateway_url. Containers need it (gateway_url is then an "
        "in-network name). It must share the dashboard's host so the session cookie reaches both.",
    )
    dashboard_uploads: bool = Field(
        True, description="Show the CSV upload (needs a key that may write, i.e. the admin key)."
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
        """The key for gateway calls: ``dashboard_api_key``, else ``admin_api_key``."""
        for secret in (self.dashboard_api_key, self.admin_api_key):
            if secret is not None:
                key = secret.get_secret_value().strip()
                if key and key != _PLACEHOLDER:
                    return key
        return None


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
