"""The speed layer's Spark SQL cleaning and the ingest's pydantic validation are generated from
one field table: every rule, and every row of the bad-upload corpus, gets the same verdict and
the same messages from both, on a real SparkSession."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from emergify_contracts.problems import ProblemError
from emergify_contracts.song import Song, describe_validation_error, row_to_fields
from emergify_contracts.song_fields import SONG_FIELDS, SongField
from emergify_ingest.upload import (
    _NUL_ERROR,
    _has_nul,
    _open_text,
    _records,
    csv_candidates,
    inspect_csv,
)
from emergify_stream.speed.speed_layer import clean_records

CORPUS = Path(__file__).parents[1] / "ingest" / "bad_uploads"
GOOD_ID = "0123456789abcdefABCDEF"
RECORD_SCHEMA = (
    "key binary, value binary, topic string, partition int, offset bigint, timestamp timestamp"
)
#: Reasons only the CSV reader gives: the row's text itself is broken, there is no song to send.
ROW_REASONS = ("row has more cells than the header has columns", _NUL_ERROR)


def good_song() -> dict[str, Any]:
    return {
        "track_id": GOOD_ID,
        "name": "A song",
        "artists": ["An artist"],
        "artist_ids": [GOOD_ID],
        "album": "An album",
        "release_date": "2020-01-02",
        "duration_ms": 200_000,
        "popularity": 10,
        "explicit": False,
        "genres": ["indie"],
        "danceability": 0.5,
        "energy": 0.5,
        "loudness": -7.0,
        "speechiness": 0.1,
        "acousticness": 0.2,
        "instrumentalness": 0.0,
        "liveness": 0.1,
        "valence": 0.4,
        "tempo": 120.0,
        "key": 5,
        "mode": 1,
        "time_signature": 4,
    }


@dataclass(frozen=True)
class Case:
    id: str
    song: dict[str, Any]
    #: The message both paths must give (None: the song is accepted).
    expected: str | None


def _with(f: SongField, value: Any) -> dict[str, Any]:
    return {**good_song(), f.name: value}


def rule_cases() -> list[Case]:
    """One or more cases for every rule of every field in the table, and its edges."""
    cases: list[Case] = []
    for f in SONG_FIELDS:
        n = f.name
        if f.required:
            song = good_song()
            del song[n]
            cases.append(Case(f"{n}-missing", song, f"{n} is required"))
            cases.append(Case(f"{n}-null", _with(f, None), f"{n} is required"))
        else:
            song = good_song()
            del song[n]
            cases.append(Case(f"{n}-absent", song, None))
        if f.kind == "text":
            if f.required:
                cases.append(Case(f"{n}-blank", _with(f, "   "), f"{n} is required"))
            if f.max_length is not None:
                at_limit = GOOD_ID if f.pattern else "x" * f.max_length
                cases.append(Case(f"{n}-at-limit", _with(f, at_limit), None))
                cases.append(
                    Case(
                        f"{n}-too-long",
                        _with(f, "x" * (f.max_length + 1)),
                        f"{n} is longer than {f.max_length} characters",
                    )
                )
            if f.pattern is not None:
                cases.append(
                    Case(
                        f"{n}-pattern",
                        _with(f, "bad id"),
                        (f.pattern_message or "").format(field=n, value="bad id"),
                    )
                )
                cases.append(Case(f"{n}-pattern-trimmed", _with(f, f"  {good_song()[n]}  "), None))
        elif f.kind == "text_list":
            item = GOOD_ID if f.pattern else "x"
            if f.min_items:
                for label, value in (("empty", []), ("blanks", ["  ", ""])):
                    cases.append(Case(f"{n}-{label}", _with(f, value), f.min_items_message))
            if f.max_length is not None:
                cases.append(Case(f"{n}-at-limit", _with(f, [item] * f.max_length), None))
                cases.append(
                    Case(
                        f"{n}-too-many",
                        _with(f, [item] * (f.max_length + 1)),
                        (f.length_message or "").format(field=n, limit=f.max_length),
                    )
                )
            if f.pattern is not None:
                cases.append(
                    Case(
                        f"{n}-item-pattern",
                        _with(f, [GOOD_ID, "nope"]),
                        (f.pattern_message or "").format(field=n, value="nope"),
                    )
                )
        elif f.kind in ("number", "integer"):
            cases.append(Case(f"{n}-text", _with(f, "fast"), f"{n} 'fast' is not a number"))
            step = 1 if f.kind == "integer" else 0.25
            for bound, side in ((f.minimum, -1), (f.maximum, 1)):
                if bound is None:
                    continue
                on = int(bound) if f.kind == "integer" else float(bound)
                cases.append(Case(f"{n}-on-bound{side:+d}", _with(f, on), None))
                cases.append(Case(f"{n}-past-bound{side:+d}", _with(f, on + side * step), "range"))
            if f.kind == "number":
                for label, value in (("nan", math.nan), ("inf", math.inf), ("-inf", -math.inf)):
                    cases.append(Case(f"{n}-{label}", _with(f, value), "range"))
            else:
                cases.append(
                    Case(f"{n}-fraction", _with(f, 2.5), f"{n} '2.5' is not a whole number")
                )
        elif f.kind == "boolean":
            cases.append(Case(f"{n}-true", _with(f, True), None))
            cases.append(Case(f"{n}-maybe", _with(f, "maybe"), f"{n} 'maybe' is not true/false"))
    cases.append(Case("good", good_song(), None))
    cases.append(
        Case(
            "two-rules",
            {**good_song(), "danceability": 1.7, "track_id": "short"},
            "track_id 'short' is not a 22-character base62 Spotify id; "
            "danceability 1.7 is outside [0, 1]",
        )
    )
    return cases


CASES = rule_cases()


def pydantic_reasons(song: dict[str, Any]) -> list[str]:
    """The ingest's JSON path: the song through :class:`Song`."""
    try:
        Song.model_validate(song)
    except ValidationError as exc:
        return describe_validation_error(exc)
    return []


def spark_reasons(spark: Any, songs: list[dict[str, Any]]) -> list[list[str]]:
    """The speed layer's path: each song as a SongEvent record through the cleaning SQL."""
    now = datetime.now(UTC)
    records = [
        (
            GOOD_ID.encode(),
            json.dumps(
                {
                    "schema_version": 1,
                    "upload_id": "u1",
                    "source": "test",
                    "ingested_at": "2026-01-01T00:00:00Z",
                    "song": song,
                }
            ).encode(),
            "songs",
            0,
            offset,
            now,
        )
        for offset, song in enumerate(songs)
    ]
    frame = spark.createDataFrame(records, RECORD_SCHEMA)
    rows = clean_records(spark, frame).select("kafka_offset", "reject_reason").collect()
    reasons = {r["kafka_offset"]: r["reject_reason"] for r in rows}
    return [reasons[i].split("; ") if reasons[i] else [] for i in range(len(songs))]


@pytest.fixture(scope="module")
def spark_verdicts(spark: Any) -> dict[str, list[str]]:
    return dict(
        zip([c.id for c in CASES], spark_reasons(spark, [c.song for c in CASES]), strict=True)
    )


def test_every_field_has_rule_cases() -> None:
    covered = {c.id.split("-", 1)[0] for c in CASES}
    assert {f.name for f in SONG_FIELDS} <= covered


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rule_gives_the_same_verdict_and_message_in_spark_and_pydantic(
    case: Case, spark_verdicts: dict[str, list[str]]
) -> None:
    in_spark = spark_verdicts[case.id]
    in_pydantic = pydantic_reasons(case.song)
    assert in_spark == in_pydantic
    if case.expected is None:
        assert in_pydantic == []
    elif case.expected == "range":
        (message,) = in_pydantic
        name = case.id.split("-", 1)[0]
        assert message.startswith(f"{name} ")
        assert "outside" in message or "must be" in message
    else:
        assert "; ".join(in_pydantic) == case.expected


# --- the bad-upload corpus -------------------------------------------------------------


@dataclass
class CorpusRow:
    file: str
    row: int
    ingest: list[str]
    song: dict[str, Any] | None  # None when the CSV reader could not read the row's text


def corpus_rows() -> list[CorpusRow]:
    """Every record of every corpus file that gets past the whole-file checks, with the
    ingest's reasons and the fields the speed layer would receive for it."""
    out: list[CorpusRow] = []
    for path in sorted(CORPUS.iterdir()):
        if path.suffix not in (".csv", ".tsv"):
            continue
        with path.open("rb") as fh:
            try:
                plan = inspect_csv(fh, max_rows=1_000_000)
            except ProblemError:
                continue  # a whole-file problem: no rows to compare
            verdicts = {row: outcome for row, _id, outcome in csv_candidates(fh, plan)}
            text = _open_text(fh, plan.encoding)
            try:
                _header, records = _records(text)
                for row, record in records:
                    outcome = verdicts[row]
                    reasons = [] if isinstance(outcome, Song) else list(outcome)
                    song = None
                    if not isinstance(record, csv.Error) and not _has_nul(record):
                        fields = row_to_fields(record, plan.layout)
                        song = {**fields.values, **fields.unreadable}
                    out.append(CorpusRow(path.name, row, reasons, song))
            finally:
                text.detach()
    return out


def test_every_corpus_row_gets_the_same_verdict_and_messages(spark: Any) -> None:
    rows = corpus_rows()
    readable = [r for r in rows if r.song is not None]
    in_spark = spark_reasons(spark, [r.song for r in readable if r.song is not None])
    files = {r.file for r in readable}
    assert {"out_of_range.csv", "wrong_types.csv", "ragged_rows.csv"} <= files
    assert sum(1 for r in readable if r.ingest) >= 20  # the corpus has many bad rows

    mismatches = []
    for row, spark_says in zip(readable, in_spark, strict=True):
        field_reasons = [m for m in row.ingest if m not in ROW_REASONS]
        if spark_says != field_reasons:
            mismatches.append((row.file, row.row, row.ingest, spark_says))
        if len(field_reasons) < len(row.ingest):  # the row's text itself: ingest refuses it
            assert row.ingest, row
    assert mismatches == []
    for row in rows:
        if row.song is None:
            assert row.ingest, row  # unreadable text is refused by the ingest, never passed on
