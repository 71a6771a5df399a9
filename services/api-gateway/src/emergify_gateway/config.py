"""The gateway's settings: upstream addresses come from the shared base, the rest is its own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr

from emergify_contracts.session import SessionSettings

# `emergify up` writes this into .env.example; it must never work as a real key.
ADMIN_KEY_PLACEHOLDER = "generated-on-first-run"


class Settings(SessionSettings):
    """Settings of the API gateway (environment prefix ``EMERGIFY_``)."""

    connect_timeout_seconds: float = Field(
        2.0, gt=0, description="How long to wait for an upstream to accept a connection."
    )
    upstream_timeout_seconds: float = Field(
        30.0, gt=0, description="How long to wait for an upstream's answer (read timeout)."
    )
    upload_timeout_seconds: float = Field(
        300.0, gt=0, description="Read/write timeout for song uploads, which may be large."
    )
    probe_timeout_seconds: float = Field(
        2.0, gt=0, description="Timeout of each upstream /health and /openapi.json call."
    )
    max_upload_bytes: int = Field(
        50 * 1024 * 1024, gt=0, description="Largest request body the gateway forwards."
    )
    read_api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated keys with scope recs:read (optional; prefer the key file).",
    )
    dashboard_api_key: SecretStr | None = Field(
        None,
        description="The dashboard's own key (scope recs:read; `emergify up` generates it). Only "
        "with it does the gateway trust the dashboard's per-viewer header (X-Emergify-Viewer).",
    )
    dashboard_uploads: bool = Field(
        False,
        description="Let the dashboard's key upload songs on behalf of a signed-in listener.",
    )
    api_keys_file: Path = Field(
        Path("var/api-keys.json"),
        description="Scoped API keys, stored hashed (`emergify keys`); re-read when it changes.",
    )
    rate_limit_per_minute: int = Field(
        600, ge=0, description="Sustained requests per minute per key and per client IP; 0 = off."
    )
    rate_limit_burst: int = Field(100, ge=1, description="Requests allowed in a burst.")
    dashboard_origin: str = Field(
        "http://127.0.0.1:8501", description="The one browser origin CORS allows."
    )
    allow_no_auth: bool = Field(
        False, description="Run without an admin key, every caller an admin (local experiments)."
    )
    force_hsts: bool = Field(
        False,
        description="Send Strict-Transport-Security on every response, not only on https "
        "requests (set it behind a TLS-terminating proxy that does not forward the scheme).",
    )
    openapi_cache_seconds: float = Field(
        10.0, ge=0, description="How long the merged OpenAPI document is reused."
    )

    def admin_key(self) -> str | None:
        """The configured admin key, or None when it is unset, empty or the placeholder."""
        if self.admin_api_key is None:
            return None
        key = self.admin_api_key.get_secret_value().strip()
        return key if key and key != ADMIN_KEY_PLACEHOLDER else None

    def dashboard_key(self) -> str | None:
        """The dashboard's key, or None when it is unset, empty or the placeholder."""
        if self.dashboard_api_key is None:
            return None
        key = self.dashboard_api_key.get_secret_value().strip()
        return key if key and key != ADMIN_KEY_PLACEHOLDER else None

    def read_keys(self) -> list[str]:
        """The read-only keys, blanks removed."""
        raw = self.read_api_keys.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
