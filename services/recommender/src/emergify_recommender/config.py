"""Settings of the recommender (the serving layer)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from emergify_contracts.settings import EmergifySettings


class Settings(EmergifySettings):
    """Everything the recommender needs; every field is an ``EMERGIFY_*`` variable."""

    refresh_interval_seconds: float = Field(
        5.0,
        gt=0,
        description="Fallback poll of the feature table and model registry, for when change "
        "events do not arrive (Kafka down, event lost).",
    )
    change_feed_retry_initial_seconds: float = Field(
        0.5, gt=0, description="First wait before reconnecting to Kafka after a failure."
    )
    change_feed_retry_max_seconds: float = Field(
        15.0, gt=0, description="Longest wait between Kafka reconnection attempts (backoff cap)."
    )
    change_feed_fetch_max_wait_ms: int = Field(
        25,
        ge=1,
        le=500,
        description="How long a change-feed fetch waits at the broker for new events. The "
        "embedded broker answers a waiting fetch late, not as soon as an event arrives, so up "
        "to this much is added to freshness (bench/README.md).",
    )
    speed_layer_timeout_seconds: float = Field(
        1.0, gt=0, description="Timeout of the stream processor's /admin/status call."
    )
    max_clusters_sample: int = Field(
        20_000, ge=1, description="Largest `sample` accepted by GET /api/v1/clusters."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
