"""The master dataset on its own: schema, atomic files, latest versions, local paths only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from emergify_contracts.song import Song
from emergify_ingest.config import Settings
from emergify_ingest.main import create_app
from emergify_ingest.master_dataset import (
    SCHEMA,
    MasterDataset,
    lake_path,
    latest_versions,
    read_master_dataset,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def song(track_id: str, name: str, **extra: object) -> Song:
    return Song(
        track_id=track_id,
        name=name,
        artists=["Lauren Faith", "B. Aull"],
        danceability=0.7,
        energy=0.5,
        loudness=-8.0,
        speechiness=0.1,
        acousticness=0.2,
        instrumentalness=0.0,
        liveness=0.1,
        valence=0.5,
        tempo=120.0,
        **extra,
    )


A, B = "5P6nbeGMqnAGwqt9rrraaQ", "2ERNqTqQJKm10LH6etp0IE"


def test_schema_has_every_song_field_and_provenance() -> None:
    assert SCHEMA.names == [*Song.model_fields, "upload_id", "source", "ingested_at", "row"]
    assert SCHEMA.field("artists").type == pa.list_(pa.string())
    assert not SCHEMA.field("artists").nullable
    assert SCHEMA.field("popularity").nullable
    assert SCHEMA.field("popularity").type == pa.int64()
    assert SCHEMA.field("explicit").type == pa.bool_()
    assert not SCHEMA.field("danceability").nullable
    assert SCHEMA.field("ingested_at").type == pa.timestamp("us", tz="UTC")


def test_append_writes_one_partitioned_file_atomically(tmp_path: Path) -> None:
    dataset = MasterDataset(str(tmp_path))
    path = dataset.append(
        [song(A, "One", popularity=3, genres=["indie"]), song(B, "Two")],
        [1, 2],
        upload_id="u1",
        chunk=7,
        source="csv:exportify",
        ingested_at=T0,
    )

    assert path == tmp_path / "songs" / "date=2026-03-01" / "u1-00007.parquet"
    assert [p.name for p in path.parent.iterdir()] == ["u1-00007.parquet"]
    rows = pq.read_table(path).to_pylist()
    assert rows[0]["artists"] == ["Lauren Faith", "B. Aull"]
    assert rows[0]["genres"] == ["indie"]
    assert rows[1]["popularity"] is None
    assert rows[0]["ingested_at"] == T0
    assert (rows[0]["upload_id"], rows[0]["source"], rows[0]["row"]) == ("u1", "csv:exportify", 1)


def test_latest_version_is_max_ingested_at_then_row(tmp_path: Path) -> None:
    dataset = MasterDataset(f"file://{tmp_path}")
    later = T0 + timedelta(seconds=1)
    dataset.append(
        [song(A, "old"), song(B, "b")],
        [1, 2],
        upload_id="u1",
        chunk=0,
        source="json",
        ingested_at=later,
    )
    dataset.append([song(A, "older")], [9], upload_id="u0", chunk=0, source="json", ingested_at=T0)
    dataset.append(
        [song(A, "newest")], [5], upload_id="u1", chunk=1, source="json", ingested_at=later
    )
    # A crashed writer's leftover is not part of the dataset.
    (tmp_path / "songs" / "date=2026-03-01" / "u9-00000.parquet.tmp").write_bytes(b"partial")

    table = read_master_dataset(f"file://{tmp_path}")
    assert table.num_rows == 4
    latest = {r["track_id"]: r["name"] for r in latest_versions(table).to_pylist()}
    assert latest == {A: "newest", B: "b"}


def test_empty_lake_reads_as_empty_table(tmp_path: Path) -> None:
    table = read_master_dataset(str(tmp_path / "nothing"))
    assert table.num_rows == 0
    assert table.schema == SCHEMA
    assert latest_versions(table).num_rows == 0


def test_only_local_lakes_are_supported() -> None:
    assert lake_path("./var/lake") == Path("var/lake")
    assert lake_path("file:///data/lake") == Path("/data/lake")
    with pytest.raises(ValueError, match="only local lake paths"):
        create_app(Settings(_env_file=None, lake_uri="s3a://bucket/lake"))  # type: ignore[call-arg]
