"""The gateway's settings: upstream addresses come from the shared base, the rest is its own."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, IPvAnyNetwork, SecretStr

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
        50 * 1024 * 1024, gt=0, description="Largest song upload (CSV or JSON list) accepted."
    )
    max_json_bytes: int = Field(
        64 * 1024, gt=0, description="Largest body of every other route (small JSON documents)."
    )
    request_deadline_seconds: float = Field(
        300.0, gt=0, description="How long a client may take to send a request's whole body."
    )
    linger_seconds: float = Field(
        30.0,
        ge=0,
        description="After answering before the body was read (401, 413), how long the rest "
        "of the body is read and discarded so the client can read the answer.",
    )
    linger_max_bytes: int = Field(
        128 * 1024 * 1024, ge=0, description="At most this much of such a body is discarded."
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
        600,
        ge=0,
        description="Sustained requests per minute of a key without a rate of its own, and of "
        "each client address without a key; 0 = off.",
    )
    rate_limit_burst: int = Field(100, ge=1, description="Requests allowed in a burst.")
    admin_rate_limit_per_minute: int = Field(
        0,
        ge=0,
        description="Requests per minute for the bootstrap admin key; 0 = not limited (it is "
        "the operator's own key, used by scripts).",
    )
    trusted_proxies: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Addresses (or networks) of reverse proxies whose X-Forwarded-For is "
        "believed; from anyone else the header is ignored. JSON list, e.g. "
        '["10.0.0.0/8"].',
    )
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
    health_cache_seconds: float = Field(
        2.0, ge=0, description="How long the combined /health report is reused."
    )
    revoked_sessions_file: Path = Field(
        Path("var/revoked-sessions.json"),
        description="Signed-out session cookies (hashed), refused until they expire.",
    )
    recommender_urls: str = Field(
        "",
        description="Comma-separated base URLs of recommender replicas to balance across; "
        "empty: the one recommender_url.",
    )
    replica_check_interval_seconds: float = Field(
        2.0,
        gt=0,
        description="How often each replica's /health is checked (a replica taken out after a "
        "failure comes back at the first good check).",
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

    def recommender_replicas(self) -> list[str]:
        """The recommender replicas' base URLs: ``recommender_urls``, else ``recommender_url``."""
        urls = [u.strip().rstrip("/") for u in self.recommender_urls.split(",") if u.strip()]
        return urls or [self.recommender_url.rstrip("/")]

    def read_keys(self) -> list[str]:
        """The read-only keys, blanks removed."""
        raw = self.read_api_keys.get_secret_value()
        return [key.strip() for key in raw.split(",") if key.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
