"""Turning an upload (CSV file or JSON document) into validated songs, one row at a time.

Pure logic on plain data: no Kafka, no lake, no HTTP. The CSV is read twice, both times
streamed: :func:`inspect_csv` checks encoding, layout and size before anything is written,
so a bad file never leaves half of itself behind; :func:`csv_candidates` then validates row by
row. :func:`accepted_chunks` groups accepted songs into chunks and keeps the
:class:`UploadLedger` of what was accepted and rejected.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from pydantic import BaseModel, Field, ValidationError

from emergify_contracts.problems import ProblemError
from emergify_contracts.song import (
    Layout,
    RowError,
    Song,
    describe_validation_error,
    detect_layout,
    row_to_song,
)

#: Bytes looked at to tell text from binary before parsing.
SNIFF_BYTES = 8192

#: Tried in order; the first that decodes the whole file wins. latin-1 decodes anything.
ENCODINGS = ("utf-8-sig", "cp1252", "latin-1")

#: Leading bytes of compressed files and archives. Uploads are never decompressed: a file of a
#: few megabytes can inflate to gigabytes (a "zip bomb"), so they are refused unopened.
_COMPRESSED_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip-compressed"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook is one)"),
    (b"PK\x05\x06", "an empty ZIP archive"),
    (b"BZh", "bzip2-compressed"),
    (b"\xfd7zXZ\x00", "xz-compressed"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
)

# Columns (lower-cased) that hold the track id in each layout, for naming rejected rows.
_ID_COLUMNS: dict[Layout, tuple[str, ...]] = {
    Layout.EXPORTIFY: ("spotify id", "track uri"),
    Layout.KAGGLE: ("id",),
    Layout.GENRE_LABELLED: ("track_id",),
    Layout.CANONICAL: ("track_id",),
}


class RejectedRow(BaseModel):
    """A record that did not become a song, and every reason why."""

    row: int = Field(
        description="CSV: 1-based number of the data record (the header is not counted). "
        "JSON: 1-based position in the request's list (1 for a single object)."
    )
    track_id: str | None = Field(None, description="The record's track id, if it had one.")
    errors: list[str] = Field(
        description="Readable reasons, e.g. 'danceability 1.7 is outside [0, 1]'."
    )


class UploadReport(BaseModel):
    """What happened to an upload: answered with 202 once every accepted song is durable."""

    upload_id: str = Field(description="Id of this upload in the master dataset and on Kafka.")
    layout: str = Field(description="'json', or the CSV layout detected (exportify, kaggle, ...).")
    accepted: int = Field(description="Songs written to the master dataset and published.")
    rejected: list[RejectedRow] = Field(
        description="Rejected records, in upload order (at most max_reported_rejections)."
    )
    rejected_count: int = Field(description="All rejected records, listed or not.")
    warnings: list[str] = Field(
        default_factory=list, description="Things worth knowing that did not stop the upload."
    )


@dataclass
class UploadLedger:
    """Accepted and rejected records of one upload; refuses a track id seen earlier in it."""

    max_reported: int
    accepted: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    rejected_count: int = 0
    _first_row: dict[str, int] = field(default_factory=dict)

    def reject(self, row: int, track_id: str | None, errors: list[str]) -> None:
        """Record a rejected row (listed while under ``max_reported``)."""
        self.rejected_count += 1
        if len(self.rejected) < self.max_reported:
            self.rejected.append(RejectedRow(row=row, track_id=track_id, errors=errors))

    def accept(self, row: int, song: Song) -> bool:
        """Count ``song`` as accepted unless its track id was accepted earlier in this upload."""
        return self.accept_id(row, song.track_id)

    def accept_id(self, row: int, track_id: str) -> bool:
        """Count the valid song with ``track_id`` at ``row`` as accepted unless that id was
        accepted earlier in this upload."""
        first = self._first_row.get(track_id)
        if first is not None:
            self.reject(
                row,
                track_id,
                [f"track_id {track_id} already appears in row {first} of this upload"],
            )
            return False
        self._first_row[track_id] = row
        self.accepted += 1
        return True

    def warnings(self) -> list[str]:
        """Warnings the ledger itself has to give."""
        hidden = self.rejected_count - len(self.rejected)
        if hidden > 0:
            return [
                f"{self.rejected_count} rows were rejected; only the first "
                f"{len(self.rejected)} are listed"
            ]
        return []


#: One record on its way to validation: (row, track id if known, the song or its errors).
Candidate = tuple[int, str | None, Song | list[str]]


@dataclass
class SongChunk:
    """Accepted songs of one chunk, with their row numbers in the upload."""

    index: int
    rows: list[int]
    songs: list[Song]


def accepted_chunks(
    candidates: Iterator[Candidate], ledger: UploadLedger, chunk_rows: int
) -> Iterator[SongChunk]:
    """Validate ``candidates`` into the ledger, yielding accepted songs ``chunk_rows`` at a time."""
    rows: list[int] = []
    songs: list[Song] = []
    index = 0
    for row, track_id, outcome in candidates:
        if isinstance(outcome, Song):
            if ledger.accept(row, outcome):
                rows.append(row)
                songs.append(outcome)
        else:
            ledger.reject(row, track_id, outcome)
        if len(songs) >= chunk_rows:
            yield SongChunk(index, rows, songs)
            index += 1
            rows, songs = [], []
    if songs:
        yield SongChunk(index, rows, songs)


# --- CSV ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvPlan:
    """What the first pass learned about an uploaded CSV."""

    encoding: str
    layout: Layout
    records: int
    id_columns: tuple[str, ...]
    warnings: tuple[str, ...] = ()


def _not_csv(detail: str) -> ProblemError:
    return ProblemError(422, detail, title="Not a CSV file")


def _sniff(file: BinaryIO) -> None:
    """Refuse what is plainly not a CSV text file, before parsing it."""
    file.seek(0)
    head = file.read(SNIFF_BYTES)
    file.seek(0)
    if not head.strip():
        raise ProblemError(422, "the uploaded file is empty: nothing to ingest", title="Empty file")
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise _not_csv("the file is UTF-16 text; save it as CSV UTF-8 and upload it again")
    for magic, kind in _COMPRESSED_MAGIC:
        if head.startswith(magic):
            raise _not_csv(
                f"the file is {kind}, not CSV text; uploads are not decompressed (a small "
                "archive can inflate to gigabytes): upload the uncompressed CSV"
            )
    if b"\x00" in head:
        raise _not_csv(
            "the file is binary (it contains NUL bytes), not CSV text; upload a CSV export "
            "(Exportify, the Kaggle tracks layout or canonical columns)"
        )
    if head.removeprefix(codecs.BOM_UTF8).lstrip().startswith((b"{", b"[")):
        raise _not_csv(
            "the file is JSON, not CSV; send JSON songs to POST /api/v1/songs with "
            "Content-Type: application/json"
        )


def _open_text(file: BinaryIO, encoding: str) -> io.TextIOWrapper:
    file.seek(0)
    # newline="" lets the csv module see quoted line breaks; strict errors find bad encodings.
    return io.TextIOWrapper(file, encoding=encoding, errors="strict", newline="")  # type: ignore[type-var]


def _records(
    text: io.TextIOWrapper,
) -> tuple[list[str] | None, Iterator[tuple[int, dict[str | None, Any] | csv.Error]]]:
    """The header and an iterator of (row number, record or the csv error it raised)."""
    reader = csv.DictReader(text)
    try:
        header = reader.fieldnames
    except csv.Error as exc:
        raise _not_csv(f"the header line cannot be read as CSV: {exc}") from None

    def records() -> Iterator[tuple[int, dict[str | None, Any] | csv.Error]]:
        row = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                # The reader skips past the broken record, so one bad row does not end the file.
                row += 1
                yield row, exc
                continue
            row += 1
            yield row, record

    return (list(header) if header is not None else None), records()


def inspect_csv(file: BinaryIO, max_rows: int) -> CsvPlan:
    """First pass: encoding, layout and record count, or a :class:`ProblemError` saying why not.

    Streams the file; stops early once it holds more than ``max_rows`` records.
    """
    _sniff(file)
    utf8_problem = ""
    for encoding in ENCODINGS:
        text = _open_text(file, encoding)
        try:
            header, records = _records(text)
            count = 0
            for count, _ in records:
                if count > max_rows:
                    raise ProblemError(
                        413,
                        f"the file has more than {max_rows} data rows (the limit is "
                        f"max_rows={max_rows}); split it into smaller uploads",
                        title="Too many rows",
                        max_rows=max_rows,
                    )
        except UnicodeDecodeError as exc:
            if not utf8_problem:
                utf8_problem = f"byte 0x{exc.object[exc.start]:02x} is not UTF-8"
            continue
        finally:
            text.detach()
        break
    else:  # pragma: no cover - latin-1 decodes every byte sequence
        raise _not_csv("the file is not text in any supported encoding")
    warnings: list[str] = []
    if encoding != "utf-8-sig":
        name = {"cp1252": "Windows-1252 (cp1252)", "latin-1": "Latin-1"}[encoding]
        warnings.append(
            f"the file is not valid UTF-8 ({utf8_problem}); it was read as {name} — save it "
            "as CSV UTF-8 to be sure names come through as written"
        )
    if not header or not any(h.strip() for h in header):
        raise ProblemError(422, "the uploaded file has no header line", title="Empty file")
    try:
        layout = detect_layout(header)
    except ValueError as exc:
        raise ProblemError(
            422,
            str(exc) + _delimiter_hint(header),
            title="Unknown CSV layout",
            columns=[h.strip() for h in header][:100],
        ) from None
    _refuse_repeated_columns(header)
    if count == 0:
        raise ProblemError(
            422,
            "the file has a header line but no data rows: nothing to ingest",
            title="No data rows",
        )
    wanted = _ID_COLUMNS[layout]
    id_columns = tuple(h for h in header if h.replace("\ufeff", "").strip().lower() in wanted)
    return CsvPlan(encoding, layout, count, id_columns, tuple(warnings))


def _delimiter_hint(header: list[str]) -> str:
    """A hint when the header is one column that another delimiter would have split."""
    if len(header) == 1:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs")):
            if delimiter in header[0]:
                return (
                    f"; the header line is separated by {name}: save the file as "
                    "comma-separated CSV"
                )
    return ""


def _refuse_repeated_columns(header: list[str]) -> None:
    """Refuse a header naming a column twice: which cell holds the value would be a guess."""
    seen: set[str] = set()
    for column in header:
        name = column.replace("\ufeff", "").strip().lower()
        if name and name in seen:
            raise ProblemError(
                422,
                f"the column {column.strip()!r} appears more than once in the header; keep one "
                "and upload the file again",
                title="Repeated column",
            )
        seen.add(name)


#: A NUL character in a value: PostgreSQL text cannot hold it and no song name has one.
_NUL_ERROR = "a value contains a NUL character (\\x00); remove it"


def _has_nul(value: Any) -> bool:
    """Whether ``value`` (a CSV record or a JSON item) holds a NUL character anywhere."""
    pending = [value]  # a loop, not recursion: JSON nesting depth is the sender's choice
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _raw_track_id(record: dict[str | None, Any], id_columns: tuple[str, ...]) -> str | None:
    for column in id_columns:
        value = record.get(column)
        if isinstance(value, str) and value.strip():
            # A track URI (spotify:track:<id>) names the id in its last part.
            return value.strip().rsplit(":", 1)[-1][:100]
    return None


def csv_candidates(file: BinaryIO, plan: CsvPlan) -> Iterator[Candidate]:
    """Second pass: every record of the file as a song or the reasons it is not one."""
    text = _open_text(file, plan.encoding)
    try:
        _header, records = _records(text)
        for row, record in records:
            if isinstance(record, csv.Error):
                yield row, None, [f"the record cannot be read as CSV: {record}"]
                continue
            track_id = _raw_track_id(record, plan.id_columns)
            if _has_nul(record):
                yield row, track_id, [_NUL_ERROR]
                continue
            try:
                yield row, track_id, row_to_song(record, plan.layout)
            except RowError as exc:
                yield row, track_id, exc.errors
    finally:
        text.detach()


# --- JSON --------------------------------------------------------------------------------


def parse_json_songs(body: bytes, max_rows: int) -> list[Any]:
    """The song objects of a JSON body (one object or a list), or a problem saying why not."""
    if not body.strip():
        raise ProblemError(
            422,
            "the request body is empty; send a song object or a list of them",
            title="Empty body",
        )
    try:
        payload = _load_json(body.decode(json.detect_encoding(body)), max_rows)
    except UnicodeDecodeError:
        raise ProblemError(422, "the request body is not UTF-8 JSON", title="Not JSON") from None
    except json.JSONDecodeError as exc:
        raise ProblemError(
            422,
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno}",
            title="Not JSON",
        ) from None
    except RecursionError:
        raise ProblemError(
            422,
            "the JSON body is nested too deeply; a song is an object of plain fields",
            title="Not JSON",
        ) from None
    except ValueError as exc:
        # Python refuses integers of more than 4,300 digits (int_max_str_digits).
        raise ProblemError(
            422, f"the request body cannot be read as JSON: {exc}", title="Not JSON"
        ) from None
    items = [payload] if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ProblemError(
            422,
            f"the JSON body is a {type(payload).__name__}; send a song object or a list of them",
            title="Not a song or a list of songs",
        )
    if not items:
        raise ProblemError(422, "the list is empty: nothing to ingest", title="No songs")
    return items


_WHITESPACE = re.compile(r"[ \t\n\r]*")


def _load_json(text: str, max_rows: int) -> Any:
    """``json.loads(text)``, except that a top-level list is parsed one item at a time and
    refused (413) at the first item past ``max_rows``: the rest is never parsed."""
    decoder = json.JSONDecoder()
    at = _WHITESPACE.match(text, 0).end()  # type: ignore[union-attr]
    if not text.startswith("[", at):
        payload, at = decoder.raw_decode(text, at)
    else:
        payload = []
        at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
        closed = text.startswith("]", at)
        while not closed:
            item, at = decoder.raw_decode(text, at)
            payload.append(item)
            if len(payload) > max_rows:
                raise ProblemError(
                    413,
                    f"the list holds more than {max_rows} songs; the limit is "
                    f"max_rows={max_rows}: split it into smaller uploads",
                    title="Too many rows",
                    max_rows=max_rows,
                )
            at = _WHITESPACE.match(text, at).end()  # type: ignore[union-attr]
            if text.startswith(",", at):
                at = _WHITESPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            elif text.startswith("]", at):
                closed = True
            else:
                raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at += 1
    if _WHITESPACE.match(text, at).end() != len(text):  # type: ignore[union-attr]
        raise json.JSONDecodeError("Extra data", text, at)
    return payload


def json_candidates(items: list[Any]) -> Iterator[Candidate]:
    """Every item of a JSON list as a song or the reasons it is not one."""
    for row, item in enumerate(items, 1):
        if not isinstance(item, dict):
            yield row, None, [f"the item is a {type(item).__name__}, not a song object"]
            continue
        raw_id = item.get("track_id")
        track_id = raw_id[:100] if isinstance(raw_id, str) else None
        if _has_nul(item):
            yield row, track_id, [_NUL_ERROR]
            continue
        try:
            yield row, track_id, Song.model_validate(item)
        except ValidationError as exc:
            yield row, track_id, describe_validation_error(exc)
