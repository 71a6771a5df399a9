"""The master dataset's layout, shared by the ingest writer and the Spark reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from emergify_contracts import lake


def test_names_and_partitions() -> None:
    at = datetime(2025, 3, 9, 23, 59, tzinfo=UTC)
    assert lake.partition_name(at) == "date=2025-03-09"
    assert lake.file_name("u-1", 7) == "u-1-00007.parquet"
    assert lake.tmp_name("u-1-00007.parquet") == "u-1-00007.parquet.tmp"


def test_uris(tmp_path: Path) -> None:
    assert lake.local_path(str(tmp_path)) == tmp_path
    assert lake.local_path(f"file://{tmp_path}") == tmp_path
    assert lake.local_path(r"C:\lake") == Path(r"C:\lake")  # a drive letter, not a scheme
    assert lake.local_path("s3a://bucket/lake") is None
    assert lake.songs_location("s3a://bucket/lake/") == "s3a://bucket/lake/songs"
    assert lake.songs_location("var/lake") == str(Path("var/lake").resolve() / "songs")
    assert not lake.known_empty("s3a://bucket/lake")  # only the storage can tell


def test_only_complete_files_count(tmp_path: Path) -> None:
    uri = f"file://{tmp_path}"
    assert lake.known_empty(uri) and lake.song_files(uri) == []
    day = tmp_path / lake.SONGS_DIR / lake.partition_name(datetime(2025, 1, 1, tzinfo=UTC))
    day.mkdir(parents=True)
    (day / lake.tmp_name(lake.file_name("u", 0))).write_bytes(b"half")
    assert lake.known_empty(uri)
    (day / lake.file_name("u", 0)).write_bytes(b"whole")
    assert not lake.known_empty(str(tmp_path))
    assert lake.song_files(uri) == [day / "u-00000.parquet"]
