"""Settings of the recommender (the serving layer)."""

from __future__ import annotations

import socket
from functools import lru_cache
from urllib.parse import urlparse

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
    recent_days: float = Field(
        7.0,
        ge=0,
        description="Songs recommended to a listener within this many days are skipped "
        "unless the request sets include_recent.",
    )
    like_half_life_days: float = Field(
        30.0, gt=0, description="A liked song's seed weight halves every this many days."
    )
    like_seed_limit: int = Field(
        20, ge=0, le=50, description="At most this many liked songs (newest) become seeds."
    )
    index_snapshot_path: str | None = Field(
        "./var/recommender/index.snapshot",
        description="Where the built index is saved after a full load (and after each 25% "
        "of growth) so a restart reads it back instead of rebuilding it; empty = off. Each "
        "replica may share it (writes are atomic renames).",
    )
    replica_name: str | None = Field(
        None,
        description="This replica's name in answers (which replica answered); default: "
        "host name and port.",
    )

    def replica(self) -> str:
        """This replica's name: ``replica_name``, else ``<host name>:<port>``."""
        if self.replica_name:
            return self.replica_name
        return f"{socket.gethostname()}:{urlparse(self.recommender_url).port or 8003}"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
