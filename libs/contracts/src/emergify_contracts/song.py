"""The canonical song: what every layout maps onto, and the rules a song must pass.

Two real-world CSV layouts are accepted (see ARCHITECTURE.md), plus the genre-labelled
Kaggle "Spotify Music Dataset" layout used by the quality benchmark. Each maps onto one
canonical :class:`Song`. Validation errors read like ``danceability 1.7 is outside [0, 1]``.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import ValidationError

from emergify_contracts.song_fields import SONG_FIELDS, audio_features, field_named
from emergify_contracts.song_rules import type_error
from emergify_contracts.song_schemas import song_model

#: The nine audio features used for clustering and ranking, in vector order.
AUDIO_FEATURES: tuple[str, ...] = audio_features()
UNIT_FEATURES: tuple[str, ...] = tuple(
    f for f in AUDIO_FEATURES if (field_named(f).minimum, field_named(f).maximum) == (0.0, 1.0)
)
LOUDNESS_RANGE: tuple[float, float] = (
    float(field_named("loudness").minimum or 0),
    float(field_named("loudness").maximum or 0),
)
TEMPO_RANGE: tuple[float, float] = (
    float(field_named("tempo").minimum or 0),
    float(field_named("tempo").maximum or 0),
)

TRACK_ID_RE = re.compile(field_named("track_id").pattern or "")
RELEASE_DATE_RE = re.compile(field_named("release_date").pattern or "")

#: One song with its audio features, as the whole system sees it: generated from
#: :data:`~emergify_contracts.song_fields.SONG_FIELDS`, validators included.
Song = song_model(SONG_FIELDS)


class Layout(StrEnum):
    """Known CSV layouts."""

    EXPORTIFY = "exportify"
    KAGGLE = "kaggle"
    GENRE_LABELLED = "genre-labelled"
    CANONICAL = "canonical"


# Column names (lower-cased, stripped) -> canonical field, per layout.
_EXPORTIFY = {
    "spotify id": "track_id",
    "track uri": "track_uri",
    "artist ids": "artist_ids",
    "track name": "name",
    "album name": "album",
    "artist name(s)": "artists",
    "release date": "release_date",
    "duration (ms)": "duration_ms",
    "popularity": "popularity",
    "explicit": "explicit",
    "genres": "genres",
    "time signature": "time_signature",
}
_KAGGLE = {
    "id": "track_id",
    "name": "name",
    "popularity": "popularity",
    "duration_ms": "duration_ms",
    "explicit": "explicit",
    "artists": "artists",
    "id_artists": "artist_ids",
    "release_date": "release_date",
    "time_signature": "time_signature",
}
_GENRE_LABELLED = {
    "track_id": "track_id",
    "track_name": "name",
    "track_artist": "artists",
    "track_album_name": "album",
    "track_album_release_date": "release_date",
    "track_popularity": "popularity",
    "duration_ms": "duration_ms",
    "playlist_genre": "genres",
    "time_signature": "time_signature",
}
_FEATURE_COLUMNS = {f: f for f in (*AUDIO_FEATURES, "key", "mode")}
_CANONICAL = {f: f for f in Song.model_fields}

_LAYOUTS: dict[Layout, dict[str, str]] = {
    Layout.EXPORTIFY: _EXPORTIFY,
    Layout.KAGGLE: _KAGGLE,
    Layout.GENRE_LABELLED: _GENRE_LABELLED,
    Layout.CANONICAL: _CANONICAL,
}


def _norm(column: str) -> str:
    return column.replace("\ufeff", "").strip().lower()


def detect_layout(header: list[str]) -> Layout:
    """Name the layout of a CSV header, or raise ValueError saying what is missing."""
    cols = {_norm(c) for c in header}
    if "spotify id" in cols or "track uri" in cols:
        layout = Layout.EXPORTIFY
    elif "track_id" in cols and "track_artist" in cols:
        layout = Layout.GENRE_LABELLED
    elif "track_id" in cols:
        layout = Layout.CANONICAL
    elif "id" in cols:
        layout = Layout.KAGGLE
    else:
        raise ValueError(
            "unknown CSV layout: expected an Exportify export (a 'Spotify ID' column), "
            "the Kaggle tracks layout (an 'id' column) or canonical columns ('track_id')"
        )
    mapping = {**_FEATURE_COLUMNS, **_LAYOUTS[layout]}
    present = {mapping[c] for c in cols if c in mapping}
    if "track_uri" in present:
        present.add("track_id")
    required = ("track_id", "name", "artists", *AUDIO_FEATURES)
    missing = [f for f in required if f not in present]
    if missing:
        raise ValueError(f"{layout.value} layout is missing required columns: {', '.join(missing)}")
    return layout


_QUOTED = re.compile(r"'([^']*)'|\"([^\"]*)\"")


def _split_list(value: str, layout: Layout) -> list[str]:
    value = value.strip()
    if not value:
        return []
    if value.startswith("[") and value.endswith("]"):
        if "\\" not in value:  # fast path for the Kaggle ['A', "B's"] form
            return [a or b for a, b in _QUOTED.findall(value)]
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = None
        if isinstance(parsed, list | tuple):
            return [str(x) for x in parsed]
    sep = ", " if layout is Layout.GENRE_LABELLED else ","
    return [p for p in (s.strip() for s in value.split(sep)) if p]


_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_KIND = {f.name: f.kind for f in SONG_FIELDS}
_FIELD = {f.name: f for f in SONG_FIELDS}
_ORDER = {f.name: i for i, f in enumerate(SONG_FIELDS)}


def _number(name: str, raw: str, errors: list[str], integer: bool = False) -> float | int | None:
    text = raw.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(type_error(_FIELD[name], text))
        return None
    if integer:
        if not math.isfinite(value) or value != int(value):
            errors.append(type_error(_FIELD[name], text, fractional=True))
            return None
        return int(value)
    return value


class RowError(ValueError):
    """A row that cannot become a song; ``errors`` lists every reason."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@lru_cache(maxsize=256)
def _field_of(column: str, layout: Layout) -> str | None:
    # Cached: a CSV has few distinct column names and millions of cells.
    return {**_FEATURE_COLUMNS, **_LAYOUTS[layout]}.get(_norm(column))


@dataclass
class RowFields:
    """One CSV row read as canonical fields: the step before :class:`Song`'s rules."""

    #: Field -> value, typed where the text could be read.
    values: dict[str, Any] = field(default_factory=dict)
    #: Field -> the text that could not be read as its type.
    unreadable: dict[str, str] = field(default_factory=dict)
    #: Why cells could not be read (one per unreadable field or surplus cell).
    errors: list[str] = field(default_factory=list)


def row_to_fields(row: Mapping[str, Any], layout: Layout) -> RowFields:
    """One CSV row (column -> text) of ``layout`` as canonical field values."""
    out = RowFields()
    data, errors = out.values, out.errors
    for column, raw in row.items():
        if column is None:  # csv.DictReader puts surplus cells under None
            errors.append("row has more cells than the header has columns")
            continue
        name = _field_of(column, layout) if isinstance(column, str) else None
        if name is None or raw is None:
            continue
        text = str(raw)
        kind = _KIND.get(name)
        failed = len(errors)
        if name == "track_uri":
            if "track_id" not in data and text.strip():
                data["track_id"] = text.strip().rsplit(":", 1)[-1]
        elif kind == "text_list":
            data[name] = _split_list(text, layout)
        elif kind in ("number", "integer"):
            value = _number(name, text, errors, integer=kind == "integer")
            if value is not None:
                data[name] = value
        elif kind == "boolean":
            flag = _BOOL.get(text.strip().lower())
            if text.strip() and flag is None:
                errors.append(type_error(_FIELD[name], text))
            data[name] = flag
        else:
            data[name] = text
        if len(errors) > failed:
            out.unreadable[name] = text.strip()
    # Exportify joins artist names with commas; a single artist id means one artist whose
    # name contains a comma ("Tyler, The Creator"), not two.
    if layout is Layout.EXPORTIFY and len(data.get("artist_ids", [])) == 1:
        joined = next((str(v) for k, v in row.items() if k and _norm(k) == "artist name(s)"), "")
        if joined.strip():
            data["artists"] = [joined.strip()]
    return out


def column_fields(header: list[str], layout: Layout) -> list[str | None]:
    """The canonical field each header column of ``layout`` holds (None: ignored)."""
    return [_field_of(c, layout) for c in header]


def row_to_song(row: Mapping[str, Any], layout: Layout) -> Song:
    """Map one CSV row (column -> text) of ``layout`` onto a validated :class:`Song`.

    Raises :class:`RowError` naming every problem in the row.
    """
    fields = row_to_fields(row, layout)
    # Reasons in field order (the speed layer's order), the row's own (surplus cells) first.
    keyed = [(_ORDER.get(e.split(" ", 1)[0], -1), e) for e in fields.errors]
    try:
        song = Song.model_validate(fields.values)
    except ValidationError as exc:
        for err, message in zip(exc.errors(), describe_validation_error(exc), strict=True):
            name = str(err["loc"][0]) if err["loc"] else ""
            # A field whose text could not be read is absent, not "required": its reason is given.
            if name not in fields.unreadable:
                keyed.append((_ORDER.get(name, -1), message))
    if keyed:
        raise RowError([message for _, message in sorted(keyed, key=lambda k: k[0])])
    return song


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into sentences a person can act on (the rules' own messages)."""
    out: list[str] = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "song"
        kind = err["type"]
        msg = err["msg"]
        spec = _FIELD.get(str(err["loc"][0])) if err["loc"] else None
        if kind == "missing" or (spec is not None and kind.endswith("_type") and _null(err)):
            out.append(f"{field} is required")
        elif kind == "value_error":
            out.append(msg.removeprefix("Value error, "))
        elif spec is not None and kind in _TYPE_ERRORS:
            out.append(type_error(spec, err.get("input"), fractional=kind == "int_from_float"))
        else:
            out.append(f"{field}: {msg}")
    return out


def _null(err: Any) -> bool:
    return "input" in err and err["input"] is None


_TYPE_ERRORS = frozenset(
    {
        "float_parsing",
        "float_type",
        "int_parsing",
        "int_type",
        "int_from_float",
        "bool_parsing",
        "bool_type",
    }
)
