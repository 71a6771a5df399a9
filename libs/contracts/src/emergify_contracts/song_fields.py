"""The song's fields, declared once: name, type, rules, message and the stores that carry it.

Everything else about a song is derived from :data:`SONG_FIELDS`: the pydantic
:class:`~emergify_contracts.song.Song` and its validators, the speed layer's Spark SQL
cleaning (:mod:`emergify_contracts.song_rules`), and the Arrow, Spark, SQLAlchemy and JSON
schemas plus each consumer's column list (:mod:`emergify_contracts.song_schemas`). Adding a
field is one entry here (and a migration when the ``songs`` table gains a column).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: What a field holds. ``text_list`` is a list of names or ids (trimmed, empties dropped).
FieldKind = Literal["text", "integer", "number", "boolean", "text_list"]

#: Where a song's fields are kept: the master dataset (Parquet), the songs topic's events,
#: the feature table ``songs``, and the serving layer's in-memory records.
Store = Literal["lake", "event", "table", "recommender"]
ALL_STORES: frozenset[Store] = frozenset({"lake", "event", "table", "recommender"})

#: Spotify ids (tracks, artists): 22 base62 characters. Python and Java regex alike.
SPOTIFY_ID_PATTERN = "^[0-9A-Za-z]{22}$"
SPOTIFY_ID_TEXT = "is not a 22-character base62 Spotify id"


@dataclass(frozen=True)
class SongField:
    """One field of the canonical song and the rules a value must pass.

    Messages are templates with ``{field}`` (the name) and ``{value}`` (the value as text,
    numbers formatted by :func:`~emergify_contracts.song_rules.number_text`), ``{lo}``,
    ``{hi}``, ``{limit}``.
    """

    name: str
    kind: FieldKind
    required: bool = False
    description: str = ""
    #: Inclusive bounds of a number; NaN and infinities are always outside them.
    minimum: float | None = None
    maximum: float | None = None
    range_message: str | None = None
    #: Regular expression the trimmed text (or each list item) must match.
    pattern: str | None = None
    pattern_message: str | None = None
    #: Most characters of a text, or most items of a list.
    max_length: int | None = None
    length_message: str | None = None
    #: Fewest items of a list (after empties are dropped).
    min_items: int = 0
    min_items_message: str | None = None
    #: Characters the table column holds (``String(n)``); None is unbounded text.
    column_length: int | None = None
    #: One of the nine audio features used for clustering and ranking.
    audio_feature: bool = False
    stores: frozenset[Store] = field(default=ALL_STORES)

    def message(self, template: str, **values: object) -> str:
        """``template`` filled for this field."""
        return template.format(field=self.name, **values)

    def range_text(self) -> str:
        """The range message template: the field's own, else one that names the bounds."""
        if self.range_message:
            return self.range_message
        if self.minimum is not None and self.maximum is not None:
            return "{field} {value} is outside [{lo}, {hi}]"
        if self.minimum is not None:
            return "{field} {value} must be >= {lo}"
        return "{field} {value} must be <= {hi}"


def _unit(name: str) -> SongField:
    return SongField(name, "number", required=True, minimum=0.0, maximum=1.0, audio_feature=True)


#: The canonical song, in column order. Audio features appear in vector order.
SONG_FIELDS: tuple[SongField, ...] = (
    SongField(
        "track_id",
        "text",
        required=True,
        description="Spotify track id, 22 base62 characters.",
        pattern=SPOTIFY_ID_PATTERN,
        pattern_message="{field} '{value}' " + SPOTIFY_ID_TEXT,
        column_length=22,
    ),
    SongField(
        "name",
        "text",
        required=True,
        max_length=500,
        length_message="{field} is longer than {limit} characters",
    ),
    SongField(
        "artists",
        "text_list",
        required=True,
        max_length=50,
        length_message="{field} has more than {limit} names",
        min_items=1,
        min_items_message="artists needs at least one name",
    ),
    SongField(
        "artist_ids",
        "text_list",
        max_length=50,
        length_message="{field} has more than {limit} ids",
        pattern=SPOTIFY_ID_PATTERN,
        pattern_message="artist id '{value}' " + SPOTIFY_ID_TEXT,
    ),
    SongField(
        "album",
        "text",
        max_length=500,
        length_message="{field} is longer than {limit} characters",
    ),
    SongField(
        "release_date",
        "text",
        description="YYYY, YYYY-MM or YYYY-MM-DD.",
        pattern="^[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?$",
        pattern_message="{field} '{value}' is not YYYY, YYYY-MM or YYYY-MM-DD",
        column_length=10,
    ),
    # A day: no track is longer, and the bound keeps a huge number out of int64 columns.
    SongField("duration_ms", "integer", minimum=0, maximum=86_400_000),
    SongField("popularity", "integer", minimum=0, maximum=100),
    SongField("explicit", "boolean"),
    SongField(
        "genres",
        "text_list",
        max_length=100,
        length_message="{field} has more than {limit} entries",
    ),
    _unit("danceability"),
    _unit("energy"),
    SongField(
        "loudness",
        "number",
        required=True,
        description="dB, within -60..+5.",
        minimum=-60.0,
        maximum=5.0,
        range_message="{field} {value} dB is outside [{lo}, {hi}]",
        audio_feature=True,
    ),
    _unit("speechiness"),
    _unit("acousticness"),
    _unit("instrumentalness"),
    _unit("liveness"),
    _unit("valence"),
    SongField(
        "tempo",
        "number",
        required=True,
        # No music is faster; the bound also keeps every feature inside float32 range.
        description="BPM, within 0..1000.",
        minimum=0.0,
        maximum=1000.0,
        range_message="{field} {value} BPM must be a finite number in [{lo}, {hi}]",
        audio_feature=True,
    ),
    SongField("key", "integer", minimum=-1, maximum=11),
    SongField("mode", "integer", minimum=0, maximum=1),
    SongField("time_signature", "integer", minimum=0, maximum=7),
)


def fields_in(store: Store, fields: tuple[SongField, ...] = SONG_FIELDS) -> tuple[SongField, ...]:
    """The fields ``store`` carries, in column order."""
    return tuple(f for f in fields if store in f.stores)


def audio_features(fields: tuple[SongField, ...] = SONG_FIELDS) -> tuple[str, ...]:
    """Names of the audio features, in vector order."""
    return tuple(f.name for f in fields if f.audio_feature)


def field_named(name: str, fields: tuple[SongField, ...] = SONG_FIELDS) -> SongField:
    """The field called ``name``."""
    for f in fields:
        if f.name == name:
            return f
    raise KeyError(name)
