"""One field table, every schema derived from it: a new field reaches all of them."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pyarrow as pa
import pytest
import sqlalchemy as sa
from pydantic import ValidationError
from pyspark.sql import types as T

from emergify_contracts import song_schemas as derived
from emergify_contracts.events import SongEvent
from emergify_contracts.song import Song, describe_validation_error
from emergify_contracts.song_fields import SONG_FIELDS, SongField
from emergify_contracts.tables import songs
from emergify_recommender.records import record_class as record_class_of

BPM_RANGE = SongField(
    "bpm_confidence",
    "number",
    minimum=0.0,
    maximum=1.0,
    description="A field that does not exist, to see it flow.",
)


@pytest.fixture
def with_dummy() -> tuple[SongField, ...]:
    """The song's field table plus one new optional field."""
    return (*SONG_FIELDS, BPM_RANGE)


def test_a_new_field_reaches_every_derived_schema(with_dummy: tuple[SongField, ...]) -> None:
    name = BPM_RANGE.name
    arrow = derived.arrow_schema(with_dummy)
    assert arrow.field(name).type == pa.float64()
    assert arrow.field(name).nullable
    assert arrow.names[-4:] == ["upload_id", "source", "ingested_at", "row"]

    assert f"`{name}` double" in derived.spark_lake_ddl(with_dummy)
    assert f"`{name}`: double" in derived.spark_event_ddl(with_dummy)
    struct = derived.spark_struct(T, with_dummy)
    assert struct[name].dataType == T.DoubleType()

    columns = {c.name: c for c in derived.table_columns(with_dummy)}
    assert isinstance(columns[name].type, sa.Float)
    assert columns[name].nullable

    event = derived.event_json_schema(with_dummy)
    song_schema = event["$defs"]["Song"]["properties"]
    assert (song_schema[name]["minimum"], song_schema[name]["maximum"]) == (0.0, 1.0)
    assert "song" in event["required"]

    # The serving layer's record, derived too (and filled from a table row).
    record_class = record_class_of(with_dummy)
    assert name in {f.name for f in dataclasses.fields(record_class)}
    row = {"track_id": "x" * 22, "name": "n", "artists": ["a"], "table_version": 1, name: 0.5}
    row.update({f.name: 0.1 for f in SONG_FIELDS if f.audio_feature})
    assert getattr(record_class.from_row(row), name) == 0.5

    for listing in (
        derived.lake_columns(with_dummy),
        derived.batch_columns(with_dummy),
        derived.recommender_columns(with_dummy),
    ):
        assert name in listing

    # The generated model carries the field's rule and message.
    model = derived.song_model(with_dummy)
    good = {**_song_dict(), name: 0.5}
    assert getattr(model.model_validate(good), name) == 0.5
    with pytest.raises(ValidationError) as err:
        model.model_validate({**good, name: 1.5})
    assert describe_validation_error(err.value) == ["bpm_confidence 1.5 is outside [0, 1]"]


def test_a_field_kept_out_of_a_store_stays_out(with_dummy: tuple[SongField, ...]) -> None:
    lake_only = SongField("lake_note", "text", stores=frozenset({"lake"}))
    fields = (*SONG_FIELDS, lake_only)
    assert "lake_note" in derived.arrow_schema(fields).names
    assert "lake_note" not in derived.spark_event_ddl(fields)
    assert "lake_note" not in {c.name for c in derived.table_columns(fields)}
    assert "lake_note" not in derived.recommender_columns(fields)


def test_the_song_schemas_in_use_are_the_derived_ones() -> None:
    song_names = [f.name for f in SONG_FIELDS]
    assert list(Song.model_fields) == song_names
    assert [c.name for c in songs.c][: len(song_names)] == song_names
    assert (
        SongEvent.model_json_schema()["$defs"]["Song"]
        == (derived.event_json_schema()["$defs"]["Song"])
    )
    # One integer type everywhere: the lake and the events agree (popularity was int in one,
    # bigint in the other).
    assert "`popularity` bigint" in derived.spark_lake_ddl()
    assert "`popularity`: bigint" in derived.spark_event_ddl()


def test_contracts_do_not_import_pyspark_or_pyarrow() -> None:
    code = (
        "import sys\n"
        "import emergify_contracts.song, emergify_contracts.tables, emergify_contracts.events\n"
        "import emergify_contracts.song_schemas, emergify_contracts.song_rules\n"
        "print(sorted(m for m in ('pyspark', 'pyarrow') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def _song_dict() -> dict[str, object]:
    return {
        "track_id": "0123456789abcdefABCDEF",
        "name": "A song",
        "artists": ["An artist"],
        "danceability": 0.5,
        "energy": 0.5,
        "loudness": -7.0,
        "speechiness": 0.1,
        "acousticness": 0.2,
        "instrumentalness": 0.0,
        "liveness": 0.1,
        "valence": 0.4,
        "tempo": 120.0,
    }
