"""A song of the feature table as the serving layer receives it.

:class:`SongRecord` is derived from the one song contract
(:data:`emergify_contracts.song_fields.SONG_FIELDS`, the fields stored for the recommender):
the nine audio features packed into ``features``, list fields as tuples, every optional field
defaulting to None or (), plus the table's bookkeeping columns. A new song field reaches it
without an edit here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.song_fields import SONG_FIELDS, SongField, fields_in

_PYTHON_TYPES: dict[str, Any] = {
    "text": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "text_list": tuple[str, ...],
}
#: Bookkeeping columns of ``songs`` the serving layer keeps beside the song's own fields.
_BOOKKEEPING: tuple[tuple[str, Any], ...] = (
    ("source", str | None),
    ("upload_id", str | None),
    ("ingested_at", datetime | None),
    ("updated_at", datetime | None),
)


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when it is naive."""
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _song_fields(fields: tuple[SongField, ...] = SONG_FIELDS) -> tuple[SongField, ...]:
    return tuple(f for f in fields_in("recommender", fields) if not f.audio_feature)


def _spec(f: SongField) -> tuple[str, Any] | tuple[str, Any, Any]:
    kind = _PYTHON_TYPES[f.kind]
    if f.required:
        return (f.name, kind)
    if f.kind == "text_list":
        return (f.name, kind, dataclasses.field(default=()))
    return (f.name, kind | None, dataclasses.field(default=None))


def record_class(fields: tuple[SongField, ...] = SONG_FIELDS) -> type:
    """The record dataclass for the song ``fields`` (the contract's, unless a test adds one)."""
    own = _song_fields(fields)
    required = [_spec(f) for f in own if f.required]
    optional = [_spec(f) for f in own if not f.required]
    return dataclasses.make_dataclass(
        "SongRecord",
        [
            *required,
            ("features", tuple[float, ...]),
            ("table_version", int),
            *optional,
            *((name, kind, dataclasses.field(default=None)) for name, kind in _BOOKKEEPING),
        ],
        frozen=True,
        slots=True,
        namespace={
            "__doc__": "One song of the feature table, as the serving layer keeps it.",
            "__module__": __name__,
            "from_row": classmethod(_from_row),
            "song_fields": own,
            "feature_dict": _feature_dict,
        },
    )


def _from_row(cls: type, row: Mapping[str, Any]) -> Any:
    """Build a record from a ``songs`` table row (column name -> value)."""
    values: dict[str, Any] = {}
    for f in cls.song_fields:
        value = row.get(f.name)
        values[f.name] = tuple(value or ()) if f.kind == "text_list" else value
    return cls(
        **values,
        features=tuple(float(row[name]) for name in AUDIO_FEATURES),
        table_version=int(row["table_version"]),
        source=row.get("source"),
        upload_id=row.get("upload_id"),
        ingested_at=as_utc(row.get("ingested_at")),
        updated_at=as_utc(row.get("updated_at")),
    )


def _feature_dict(self: Any) -> dict[str, float]:
    """The nine audio features by name."""
    return dict(zip(AUDIO_FEATURES, self.features, strict=True))


SongRecord = record_class()
