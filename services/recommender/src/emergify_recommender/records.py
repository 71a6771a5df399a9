"""A song of the feature table as the serving layer receives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emergify_contracts.song import AUDIO_FEATURES


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when it is naive."""
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class SongRecord:
    """One song of the feature table, as the serving layer keeps it."""

    track_id: str
    name: str
    artists: tuple[str, ...]
    features: tuple[float, ...]
    table_version: int
    artist_ids: tuple[str, ...] = ()
    album: str | None = None
    release_date: str | None = None
    duration_ms: int | None = None
    popularity: int | None = None
    explicit: bool | None = None
    genres: tuple[str, ...] = ()
    key: int | None = None
    mode: int | None = None
    time_signature: int | None = None
    source: str | None = None
    upload_id: str | None = None
    ingested_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SongRecord:
        """Build a record from a ``songs`` table row (column name -> value)."""
        return cls(
            track_id=row["track_id"],
            name=row["name"],
            artists=tuple(row["artists"] or ()),
            features=tuple(float(row[f]) for f in AUDIO_FEATURES),
            table_version=int(row["table_version"]),
            artist_ids=tuple(row.get("artist_ids") or ()),
            album=row.get("album"),
            release_date=row.get("release_date"),
            duration_ms=row.get("duration_ms"),
            popularity=row.get("popularity"),
            explicit=row.get("explicit"),
            genres=tuple(row.get("genres") or ()),
            key=row.get("key"),
            mode=row.get("mode"),
            time_signature=row.get("time_signature"),
            source=row.get("source"),
            upload_id=row.get("upload_id"),
            ingested_at=as_utc(row.get("ingested_at")),
            updated_at=as_utc(row.get("updated_at")),
        )

    def feature_dict(self) -> dict[str, float]:
        """The nine audio features by name."""
        return dict(zip(AUDIO_FEATURES, self.features, strict=True))
