""" "Latest version wins": which of two versions of a song is the newer one, stated once.

A version is newer when its :data:`VERSION_KEY` is greater, compared left to right:

1. ``ingested_at`` — when the ingest service accepted it (one instant per chunk of an
   upload, never going backwards within an upload);
2. ``position`` — its place in its source: the Kafka offset in the stream and the feature
   table (``kafka_offset``), the row of its upload in the master dataset (``row``); it
   orders a track id sent twice within one chunk;
3. ``upload_id`` — settles exact ties, so every reader picks the same row.

A missing position or upload id counts as older than any present one. The helpers below
render that one rule for each engine: Spark/SQL text, a SQLAlchemy condition, a pandas or
pyarrow sort, a Python key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

#: The ordering key, most significant first; ``position`` is named per source.
VERSION_KEY: tuple[str, str, str] = ("ingested_at", "position", "upload_id")

#: The column holding ``position`` in each place a song is stored.
STREAM_POSITION = "kafka_offset"  # Kafka records, micro-batches, the feature table
LAKE_POSITION = "row"  # the master dataset


def version_columns(position: str) -> tuple[str, str, str]:
    """The key's three column names where ``position`` is called ``position``."""
    return ("ingested_at", position, "upload_id")


def order_by_sql(position: str, *, newest_first: bool = True, quote: str = "`") -> str:
    """An ``ORDER BY`` list (without the keywords) putting the newest version first (or
    last), e.g. ``ingested_at DESC, `row` DESC, upload_id DESC``."""
    direction = "DESC" if newest_first else "ASC"
    nulls = "NULLS LAST" if newest_first else "NULLS FIRST"
    return ", ".join(f"{quote}{c}{quote} {direction} {nulls}" for c in version_columns(position))


def latest_per_key_sql(
    source: str,
    columns: Sequence[str],
    position: str,
    *,
    key: str = "track_id",
    where: str | None = None,
    quote: str = "`",
) -> str:
    """SQL keeping the newest row per ``key`` of ``source`` (a view or table), with
    ``columns``: a ``row_number()`` window ordered by :func:`order_by_sql`."""
    cols = ", ".join(f"{quote}{c}{quote}" for c in columns)
    return f"""
SELECT {cols}
FROM (
  SELECT {cols}, row_number() OVER (
    PARTITION BY {quote}{key}{quote} ORDER BY {order_by_sql(position, quote=quote)}
  ) AS version_rank
  FROM {source}
  {f"WHERE {where}" if where else ""}
)
WHERE version_rank = 1
"""


def sort_columns(position: str) -> list[str]:
    """Columns to sort by, ascending, so the newest version of a key comes last (pandas
    ``sort_values(...).drop_duplicates(key, keep="last")``)."""
    return list(version_columns(position))


def arrow_sort_keys(position: str, key: str = "track_id") -> list[tuple[str, str]]:
    """pyarrow ``sort_by`` keys: ``key`` ascending, then the newest version of it first."""
    return [(key, "ascending"), *((c, "descending") for c in version_columns(position))]


def version_key(
    ingested_at: datetime, position: int | None, upload_id: str | None
) -> tuple[datetime, int, str]:
    """The Python sort key of one version (a greater key is newer; missing parts oldest)."""
    return (ingested_at, -1 if position is None else position, upload_id or "")


def row_version_key(row: Mapping[str, Any], position: str) -> tuple[datetime, int, str]:
    """:func:`version_key` of a mapping with the key's columns."""
    return version_key(row["ingested_at"], row.get(position), row.get("upload_id"))


def newer_than(new: Any, old: Any, position: str = STREAM_POSITION) -> sa.ColumnElement[bool]:
    """SQLAlchemy condition: the row ``new`` (e.g. ``insert.excluded``) is a newer version
    than the row ``old`` (e.g. the table), with the same tie-breaks as :func:`order_by_sql`."""
    new_at, old_at = new.ingested_at, old.ingested_at
    new_pos = sa.func.coalesce(getattr(new, position), -1)
    old_pos = sa.func.coalesce(getattr(old, position), -1)
    new_up = sa.func.coalesce(new.upload_id, "")
    old_up = sa.func.coalesce(old.upload_id, "")
    return sa.or_(
        new_at > old_at,
        sa.and_(new_at == old_at, new_pos > old_pos),
        sa.and_(new_at == old_at, new_pos == old_pos, new_up > old_up),
    )
