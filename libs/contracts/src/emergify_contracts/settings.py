"""The settings every service shares. Each service subclasses :class:`EmergifySettings`.

Values come from the environment (prefix ``EMERGIFY_``) and from ``.env``; defaults are the
embedded stack's.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class EmergifySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="EMERGIFY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    database_url: str = Field(
        "sqlite:///./var/emergify.db",
        description="SQLAlchemy URL of the feature table (PostgreSQL: postgresql+psycopg://...).",
    )
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    songs_topic: str = "emergify.songs.v1"
    songs_dlq_topic: str = "emergify.songs.dlq.v1"
    catalog_changes_topic: str = "emergify.catalog-changes.v1"
    models_topic: str = "emergify.models.v1"
    feedback_topic: str = "emergify.feedback.v1"
    listener_changes_topic: str = "emergify.listener-changes.v1"
    living_playlists_topic: str = "emergify.living-playlists.v1"
    topic_partitions: int = Field(3, ge=1)
    lake_uri: str = Field("./var/lake", description="Master dataset root (Parquet).")

    ingest_url: str = "http://127.0.0.1:8001"
    stream_processor_url: str = "http://127.0.0.1:8002"
    recommender_url: str = "http://127.0.0.1:8003"
    spotify_gateway_url: str = "http://127.0.0.1:8004"
    gateway_url: str = "http://127.0.0.1:8080"
    dashboard_url: str = Field(
        "http://127.0.0.1:8501",
        description="Where the Streamlit dashboard listens (and where sign-in lands).",
    )
    bind_host: str | None = Field(
        None, description="Address services listen on; default: the host of their own URL."
    )

    emerging_max_popularity: int = Field(
        30,
        ge=0,
        le=100,
        description="The emerging threshold: recommendations hold songs of popularity <= this "
        "unless a request sets its own max_popularity (100 lifts it). API, CLI and dashboard "
        "default to it.",
    )
    similarity_artist_weight: float = Field(
        4.0,
        ge=0,
        description="Weight of the artist-profile L1 in the ranking distance (audio L1 + weight "
        "x artist L1); chosen by `emergify evaluate` (bench/results/evaluation.json, "
        "docs/similarity.md). 0 ranks by the song's own sound alone.",
    )
    similarity_multi_artist_rule: Literal["mean", "weighted", "first"] = Field(
        "weighted",
        description="A song with several artists: its artist vector is the song-count-weighted "
        "mean of their profiles ('weighted'), the plain mean ('mean') or the first artist's.",
    )

    admin_api_key: SecretStr | None = Field(
        None, description="Key for writes (uploads, retrain) and reads through the gateway."
    )
    log_format: Literal["console", "json"] = "console"
    log_level: str = "INFO"

    def topics(self) -> list[str]:
        return [
            self.songs_topic,
            self.songs_dlq_topic,
            self.catalog_changes_topic,
            self.models_topic,
            self.feedback_topic,
            self.listener_changes_topic,
            self.living_playlists_topic,
        ]
