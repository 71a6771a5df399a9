"""Event envelopes carried on the Kafka topics (see ARCHITECTURE.md, "Kafka topics")."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from emergify_contracts.song import Song

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(UTC)


class SongEventBase(BaseModel):
    """The envelope of a songs-topic record, whatever song model it carries."""

    schema_version: int = SCHEMA_VERSION
    upload_id: str
    source: str = Field(description="Where the song came from: 'json', 'csv:<layout>', ...")
    ingested_at: datetime = Field(default_factory=utcnow)


class SongEvent(SongEventBase):
    """Value of a record on the songs topic; the key is the track id."""

    song: Song


class DeadLetter(BaseModel):
    """Value of a record on the DLQ topic: the original record and why it was refused."""

    reason: str
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None
    failed_at: datetime = Field(default_factory=utcnow)


class CatalogChange(BaseModel):
    """Published after each committed micro-batch of the feature table."""

    table_version: int = Field(description="Monotonic: the micro-batch id that committed.")
    upserted_ids: list[str]
    songs: int = Field(description="Rows in the feature table after the commit.")
    artists_changed: list[str] = Field(
        default_factory=list,
        description="Artist keys whose artist_profiles rows the micro-batch changed.",
    )
    profiles_model_version: int | None = Field(
        None, description="The model version of the artist_profiles rows it changed."
    )
    committed_at: datetime = Field(default_factory=utcnow)


class ModelPublished(BaseModel):
    """Published when a new model version is saved and current."""

    version: int
    k: int
    silhouette: float
    songs: int
    trained_at: datetime
