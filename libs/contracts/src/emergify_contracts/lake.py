"""The master dataset's layout: where its files are, how they are named, how a lake URI is read.

``{lake}/songs/date=YYYY-MM-DD/{upload_id}-{chunk:05d}.parquet``: one file per accepted
chunk, partitioned by the day it was ingested. The ingest service writes a file under
``<name>.tmp`` and renames it once it is durable, so a reader that only takes ``*.parquet``
never sees half a file. ``EMERGIFY_LAKE_URI`` is a local directory, a ``file://`` URI, or a
remote URI (``s3a://``, ``hdfs://``) that only Spark reads.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from pathlib import Path
from urllib.parse import urlparse

#: The songs' directory under the lake.
SONGS_DIR = "songs"
#: The listener feedback events' directory under the lake (same layout as songs).
FEEDBACK_DIR = "feedback"
#: Suffix of a file being written (never read).
TMP_SUFFIX = ".tmp"
#: What a complete master-dataset file is called.
FILE_GLOB = "*.parquet"
#: Complete files, relative to the songs directory.
FILES_GLOB = f"date=*/{FILE_GLOB}"


def partition_name(day: date | datetime) -> str:
    """The partition directory of songs ingested on ``day``: ``date=YYYY-MM-DD``."""
    return f"date={(day.date() if isinstance(day, datetime) else day).isoformat()}"


def file_name(upload_id: str, chunk: int) -> str:
    """The file of chunk ``chunk`` of upload ``upload_id``."""
    return f"{upload_id}-{chunk:05d}.parquet"


def listener_file_prefix(listener_id: str) -> str:
    """What every feedback file of one listener is named with first: a hash of the listener
    id, so that erasing a listener finds their files without reading any file, and a file name
    never shows who it belongs to."""
    return hashlib.sha256(listener_id.encode()).hexdigest()[:32]


def feedback_file_name(listener_id: str, event_id: str) -> str:
    """The file of one feedback event: ``{listener hash}-{event id}.parquet``."""
    return f"{listener_file_prefix(listener_id)}-{event_id}.parquet"


def listener_feedback_files(feedback_root: Path, listener_id: str) -> list[Path]:
    """Every complete feedback file of ``listener_id`` under the feedback directory."""
    return sorted(feedback_root.glob(f"date=*/{listener_file_prefix(listener_id)}-*.parquet"))


def tmp_name(final_name: str) -> str:
    """The name a file is written under before the rename that publishes it."""
    return final_name + TMP_SUFFIX


def scheme(lake_uri: str) -> str:
    """The URI's scheme, '' for a plain path (a one-letter scheme is a Windows drive)."""
    parsed = urlparse(lake_uri).scheme
    return parsed if len(parsed) > 1 else ""


def is_local(lake_uri: str) -> bool:
    """A plain path or a ``file://`` URI: readable without Spark."""
    return scheme(lake_uri) in ("", "file")


def local_path(lake_uri: str) -> Path | None:
    """The local directory of ``lake_uri``, or None for remote storage."""
    s = scheme(lake_uri)
    if s == "file":
        return Path(urlparse(lake_uri).path)
    return Path(lake_uri) if s == "" else None


def songs_location(lake_uri: str) -> str:
    """The songs directory as Spark should read it: a URI with a scheme as is, a local path
    made absolute."""
    if scheme(lake_uri):
        return lake_uri.rstrip("/") + "/" + SONGS_DIR
    return str(Path(lake_uri).resolve() / SONGS_DIR)


def feedback_location(lake_uri: str) -> str:
    """The feedback directory as Spark should read it (see :func:`songs_location`)."""
    if scheme(lake_uri):
        return lake_uri.rstrip("/") + "/" + FEEDBACK_DIR
    return str(Path(lake_uri).resolve() / FEEDBACK_DIR)


def song_files(lake_uri: str) -> list[Path]:
    """Every complete file of a local lake, oldest partition first ([] when missing)."""
    root = local_path(lake_uri)
    songs = root / SONGS_DIR if root is not None else None
    if songs is None or not songs.is_dir():
        return []
    return sorted(songs.glob(FILES_GLOB))


def known_empty(lake_uri: str) -> bool:
    """True when the lake is local and holds no complete file; a remote lake is never known
    empty without asking the storage."""
    if not is_local(lake_uri):
        return False
    root = local_path(lake_uri)
    assert root is not None
    songs = root / SONGS_DIR
    return not songs.is_dir() or next(songs.glob(FILES_GLOB), None) is None
