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


#: The most track ids plus artist keys one catalog-change event lists. An id is ~25 bytes of
#: JSON, so 20,000 names keep the record near 0.5 MB, under the 1 MB a Kafka broker accepts
#: by default (``message.max.bytes``) and the producer sends (``max.request.size``).
CATALOG_CHANGE_MAX_NAMES = 20_000


class CatalogChange(BaseModel):
    """Published after each committed micro-batch of the feature table.

    A micro-batch that upserted more songs (and changed more artists) than one record can
    name is announced without its names: ``listed`` is false, ``upserted_ids`` and
    ``artists_changed`` are empty, and a consumer reads the batch's rows by ``table_version``
    (a song's ``songs.table_version`` and an artist's ``artist_profiles.table_version`` are
    those of the last batch that wrote them; a row a later batch rewrote is announced by
    that batch)."""

    table_version: int = Field(description="Monotonic: the micro-batch id that committed.")
    upserted_ids: list[str] = Field(
        description="The track ids the micro-batch upserted (empty when not `listed`)."
    )
    songs: int = Field(description="Rows in the feature table after the commit.")
    artists_changed: list[str] = Field(
        default_factory=list,
        description="Artist keys whose artist_profiles rows the micro-batch changed (empty "
        "when not `listed`).",
    )
    profiles_model_version: int | None = Field(
        None, description="The model version of the artist_profiles rows it changed."
    )
    committed_at: datetime = Field(default_factory=utcnow)
    listed: bool = Field(
        True,
        description="False when the batch was too big to name its songs and artists in one "
        "record: read the rows of `table_version` instead.",
    )
    upserted_count: int | None = Field(
        None,
        description="How many songs the micro-batch upserted (None in events written before "
        "this field: the length of upserted_ids).",
    )

    @classmethod
    def of_batch(
        cls,
        table_version: int,
        upserted_ids: list[str],
        artists_changed: list[str],
        max_names: int = CATALOG_CHANGE_MAX_NAMES,
        **fields: object,
    ) -> CatalogChange:
        """The event of a committed micro-batch: its names, or none of them (``listed``
        false) when there are more than ``max_names``."""
        listed = len(upserted_ids) + len(artists_changed) <= max_names
        return cls(
            table_version=table_version,
            upserted_ids=upserted_ids if listed else [],
            artists_changed=artists_changed if listed else [],
            listed=listed,
            upserted_count=len(upserted_ids),
            **fields,  # type: ignore[arg-type]
        )

    @property
    def upserted(self) -> int:
        """How many songs the micro-batch upserted."""
        return len(self.upserted_ids) if self.upserted_count is None else self.upserted_count


class ModelPublished(BaseModel):
    """Published when a new model version is saved and current."""

    version: int
    k: int
    silhouette: float
    songs: int
    trained_at: datetime
