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
from enum import StrEnum
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: The nine audio features used for clustering and ranking, in vector order.
AUDIO_FEATURES: tuple[str, ...] = (
    "danceability",
    "energy",
    "loudness",
    "speechiness",
    "acousticness",
    "instrumentalness",
    "liveness",
    "valence",
    "tempo",
)
UNIT_FEATURES: tuple[str, ...] = tuple(f for f in AUDIO_FEATURES if f not in ("loudness", "tempo"))
LOUDNESS_RANGE: tuple[float, float] = (-60.0, 5.0)
#: No music is faster; the bound also keeps every feature inside float32 range for ranking.
TEMPO_RANGE: tuple[float, float] = (0.0, 1000.0)

TRACK_ID_RE = re.compile(r"^[0-9A-Za-z]{22}$")
RELEASE_DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


class Song(BaseModel):
    """One song with its audio features, as the whole system sees it."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    track_id: str = Field(description="Spotify track id, 22 base62 characters.")
    name: str = Field(min_length=1, max_length=500)
    artists: list[str] = Field(min_length=1, max_length=50)
    artist_ids: list[str] = Field(default_factory=list, max_length=50)
    album: str | None = Field(default=None, max_length=500)
    release_date: str | None = Field(default=None, description="YYYY, YYYY-MM or YYYY-MM-DD.")
    duration_ms: int | None = Field(default=None, ge=0)
    popularity: int | None = Field(default=None, ge=0, le=100)
    explicit: bool | None = None
    genres: list[str] = Field(default_factory=list, max_length=100)
    danceability: float
    energy: float
    loudness: float = Field(description="dB, within -60..+5.")
    speechiness: float
    acousticness: float
    instrumentalness: float
    liveness: float
    valence: float
    tempo: float = Field(description="BPM, within 0..1000.")
    key: int | None = Field(default=None, ge=-1, le=11)
    mode: int | None = Field(default=None, ge=0, le=1)
    time_signature: int | None = Field(default=None, ge=0, le=7)

    @field_validator("track_id")
    @classmethod
    def _track_id(cls, v: str) -> str:
        if not TRACK_ID_RE.match(v):
            raise ValueError(f"track_id {v!r} is not a 22-character base62 Spotify id")
        return v

    @field_validator("artists")
    @classmethod
    def _artists(cls, v: list[str]) -> list[str]:
        names = [a.strip() for a in v if a and a.strip()]
        if not names:
            raise ValueError("artists needs at least one name")
        return names

    @field_validator("artist_ids")
    @classmethod
    def _artist_ids(cls, v: list[str]) -> list[str]:
        ids = [a.strip() for a in v if a and a.strip()]
        for a in ids:
            if not TRACK_ID_RE.match(a):
                raise ValueError(f"artist id {a!r} is not a 22-character base62 Spotify id")
        return ids

    @field_validator("genres")
    @classmethod
    def _genres(cls, v: list[str]) -> list[str]:
        return [g.strip() for g in v if g and g.strip()]

    @field_validator("release_date")
    @classmethod
    def _release_date(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not RELEASE_DATE_RE.match(v):
            raise ValueError(f"release_date {v!r} is not YYYY, YYYY-MM or YYYY-MM-DD")
        return v

    @field_validator(*UNIT_FEATURES)
    @classmethod
    def _unit(cls, v: float, info: Any) -> float:
        if not math.isfinite(v) or not 0.0 <= v <= 1.0:
            raise ValueError(f"{info.field_name} {v:g} is outside [0, 1]")
        return v

    @field_validator("loudness")
    @classmethod
    def _loudness(cls, v: float) -> float:
        lo, hi = LOUDNESS_RANGE
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"loudness {v:g} dB is outside [{lo:g}, {hi:g}]")
        return v

    @field_validator("tempo")
    @classmethod
    def _tempo(cls, v: float) -> float:
        lo, hi = TEMPO_RANGE
        if not math.isfinite(v) or not lo <= v <= hi:
            raise ValueError(f"tempo {v:g} BPM must be a finite number in [{lo:g}, {hi:g}]")
        return v

    def features(self) -> list[float]:
        """The audio feature vector, in :data:`AUDIO_FEATURES` order."""
        return [getattr(self, f) for f in AUDIO_FEATURES]


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


def _number(field: str, raw: str, errors: list[str], integer: bool = False) -> float | int | None:
    text = raw.strip()
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        errors.append(f"{field} {text[:40]!r} is not a number")
        return None
    if integer:
        if not math.isfinite(value) or value != int(value):
            errors.append(f"{field} {text[:40]!r} is not a whole number")
            return None
        return int(value)
    return value


_INT_FIELDS = {"duration_ms", "popularity", "key", "mode", "time_signature"}


class RowError(ValueError):
    """A row that cannot become a song; ``errors`` lists every reason."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


@lru_cache(maxsize=256)
def _field_of(column: str, layout: Layout) -> str | None:
    # Cached: a CSV has few distinct column names and millions of cells.
    return {**_FEATURE_COLUMNS, **_LAYOUTS[layout]}.get(_norm(column))


def row_to_song(row: Mapping[str, Any], layout: Layout) -> Song:
    """Map one CSV row (column -> text) of ``layout`` onto a validated :class:`Song`.

    Raises :class:`RowError` naming every problem in the row.
    """
    data: dict[str, Any] = {}
    errors: list[str] = []
    for column, raw in row.items():
        if column is None:  # csv.DictReader puts surplus cells under None
            errors.append("row has more cells than the header has columns")
            continue
        field = _field_of(column, layout) if isinstance(column, str) else None
        if field is None or raw is None:
            continue
        text = str(raw)
        if field == "track_uri":
            if "track_id" not in data and text.strip():
                data["track_id"] = text.strip().rsplit(":", 1)[-1]
        elif field in ("artists", "artist_ids", "genres"):
            data[field] = _split_list(text, layout)
        elif field in AUDIO_FEATURES:
            value = _number(field, text, errors)
            if value is not None:
                data[field] = value
        elif field in _INT_FIELDS:
            value = _number(field, text, errors, integer=True)
            if value is not None:
                data[field] = value
        elif field == "explicit":
            flag = _BOOL.get(text.strip().lower())
            if text.strip() and flag is None:
                errors.append(f"explicit {text[:20]!r} is not true/false")
            data["explicit"] = flag
        else:
            data[field] = text
    # Exportify joins artist names with commas; a single artist id means one artist whose
    # name contains a comma ("Tyler, The Creator"), not two.
    if layout is Layout.EXPORTIFY and len(data.get("artist_ids", [])) == 1:
        joined = next((str(v) for k, v in row.items() if k and _norm(k) == "artist name(s)"), "")
        if joined.strip():
            data["artists"] = [joined.strip()]
    failed_numbers = {e.split(" ", 1)[0] for e in errors}
    try:
        song = Song.model_validate(data)
    except ValidationError as exc:
        errors.extend(
            e for e in describe_validation_error(exc) if e.split(" ", 1)[0] not in failed_numbers
        )
        raise RowError(errors) from None
    if errors:
        raise RowError(errors)
    return song


def describe_validation_error(exc: ValidationError) -> list[str]:
    """Turn pydantic's errors into sentences a person can act on."""
    out: list[str] = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "song"
        kind = err["type"]
        msg = err["msg"]
        if kind == "missing":
            out.append(f"{field} is required")
        elif kind == "value_error":
            out.append(msg.removeprefix("Value error, "))
        elif kind in ("float_parsing", "float_type", "int_parsing", "int_type"):
            out.append(f"{field} {str(err.get('input'))[:40]!r} is not a number")
        elif kind == "too_short" and field == "artists":
            out.append("artists needs at least one name")
        else:
            out.append(f"{field}: {msg}")
    return out
