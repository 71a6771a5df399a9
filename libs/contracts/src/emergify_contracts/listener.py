"""What Emergify keeps per listener: feedback events, recommendation history, living playlists.

The design is `docs/listener-loop.md`. Feedback travels as :class:`FeedbackEvent` on the
feedback topic (keyed by listener, so a listener's events stay in order) and is materialised
by the speed layer into :data:`listener_feedback`; living playlists keep their desired state in
:data:`living_playlists` and :data:`living_playlist_items`.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from emergify_contracts.problems import ProblemError
from emergify_contracts.song import TRACK_ID_RE
from emergify_contracts.tables import metadata

#: A listener id as the services see it: ``spotify:<user id>`` for a signed-in listener,
#: ``key:<key id>:<caller's id>`` for a listener named by an API-key caller.
LISTENER_ID_RE = re.compile(r"^[A-Za-z0-9._:@-]{1,200}$")
#: What an API-key caller may call its listener (namespaced by the gateway afterwards).
CALLER_LISTENER_ID_RE = re.compile(r"^[A-Za-z0-9._@-]{1,128}$")


class FeedbackSignal(StrEnum):
    """What a listener said about a song."""

    LIKE = "like"  # an extra seed, weighted by recency
    DISLIKE = "dislike"  # never this song again
    BAN_ARTIST = "ban_artist"  # never this song's artists again
    SKIP = "skip"  # kept; not yet a ranking signal
    ERASE = "erase"  # internal: forget everything earlier about the listener


#: Signals a listener may send (erase has its own route).
LISTENER_SIGNALS: tuple[FeedbackSignal, ...] = (
    FeedbackSignal.LIKE,
    FeedbackSignal.DISLIKE,
    FeedbackSignal.BAN_ARTIST,
    FeedbackSignal.SKIP,
)


def _now() -> datetime:
    return datetime.now(UTC)


class FeedbackEvent(BaseModel):
    """Value of a record on the feedback topic; the key is the listener id."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = 1
    event_id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$")
    listener_id: str = Field(pattern=LISTENER_ID_RE.pattern)
    track_id: str | None = Field(None, description="Null only for erase.")
    signal: FeedbackSignal
    at: datetime = Field(default_factory=_now)

    @field_validator("track_id")
    @classmethod
    def _track(cls, value: str | None) -> str | None:
        if value is not None and not TRACK_ID_RE.match(value):
            raise ValueError(f"track_id {value!r} is not a 22-character base62 Spotify id")
        return value

    @model_validator(mode="after")
    def _track_matches_signal(self) -> FeedbackEvent:
        if (self.signal is FeedbackSignal.ERASE) != (self.track_id is None):
            raise ValueError("erase carries no track_id; every other signal needs one")
        return self


class ListenerChange(BaseModel):
    """Published after each committed feedback micro-batch: whose state changed."""

    version: int = Field(description="Monotonic: the feedback micro-batch id that committed.")
    listener_ids: list[str]
    committed_at: datetime = Field(default_factory=_now)


class LivingPlaylistChange(BaseModel):
    """A living playlist's desired songs changed: the Spotify sync should catch up."""

    playlist_id: str
    version: int


#: Feedback events, one row each; the speed layer inserts them exactly once (event id key plus
#: the micro-batch marker) and an erase deletes the listener's earlier rows.
listener_feedback = sa.Table(
    "listener_feedback",
    metadata,
    sa.Column("listener_id", sa.String(200), primary_key=True),
    sa.Column("event_id", sa.String(32), primary_key=True),
    sa.Column("track_id", sa.String(22), nullable=False),
    sa.Column("signal", sa.String(16), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("kafka_partition", sa.Integer),
    sa.Column("kafka_offset", sa.BigInteger),
    sa.Column("table_version", sa.BigInteger, nullable=False),
)
sa.Index(
    "ix_listener_feedback_listener_at", listener_feedback.c.listener_id, listener_feedback.c.at
)

#: Songs recommended to a listener (latest time per song), so a listener is not served the
#: same songs again for ``recent_days`` unless they ask.
listener_history = sa.Table(
    "listener_history",
    metadata,
    sa.Column("listener_id", sa.String(200), primary_key=True),
    sa.Column("track_id", sa.String(22), primary_key=True),
    sa.Column("recommended_at", sa.DateTime(timezone=True), nullable=False),
)

#: A living playlist: a Spotify playlist Emergify keeps filled with the nearest new songs.
living_playlists = sa.Table(
    "living_playlists",
    metadata,
    sa.Column("playlist_id", sa.String(36), primary_key=True),
    sa.Column("listener_id", sa.String(200), nullable=False, index=True),
    sa.Column("spotify_playlist_id", sa.String(64)),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("max_popularity", sa.Integer),
    sa.Column("max_per_artist", sa.Integer, nullable=False),
    sa.Column("seeds", sa.JSON, nullable=False, doc="[{track_id, weight, why}]"),
    sa.Column("taste", sa.Boolean, nullable=False, doc="Seeds re-drawn from history on refresh."),
    sa.Column("version", sa.BigInteger, nullable=False, doc="Bumped on each desired change."),
    sa.Column("synced_version", sa.BigInteger, nullable=False, doc="Applied to Spotify."),
    sa.Column("songs_added", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("refreshed_at", sa.DateTime(timezone=True)),
    sa.Column("stopped_at", sa.DateTime(timezone=True)),
)

#: The songs a living playlist should hold (its desired state), nearest first by distance.
living_playlist_items = sa.Table(
    "living_playlist_items",
    metadata,
    sa.Column("playlist_id", sa.String(36), primary_key=True),
    sa.Column("track_id", sa.String(22), primary_key=True),
    sa.Column("distance", sa.Float, nullable=False),
    sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
)

#: Catalog changes already matched against living playlists, so a replay changes nothing.
living_batches = sa.Table(
    "living_batches",
    metadata,
    sa.Column("table_version", sa.BigInteger, primary_key=True),
    sa.Column("matched_at", sa.DateTime(timezone=True), nullable=False),
)

#: Feedback micro-batches already applied, so a replayed batch writes nothing twice.
listener_batches = sa.Table(
    "listener_batches",
    metadata,
    sa.Column("query_name", sa.String(100), primary_key=True),
    sa.Column("batch_id", sa.BigInteger, primary_key=True),
    sa.Column("version", sa.BigInteger, nullable=False, unique=True),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("committed_at", sa.DateTime(timezone=True), nullable=False),
)

#: Who called, as the api-gateway tells the services behind it: ``session:<Spotify user id>``
#: for a signed-in listener, ``key:<key id>`` for an API-key caller. The gateway drops any
#: value a client sends; services trust it because only the gateway holds the internal
#: credential.
CALLER_HEADER = "X-Emergify-Caller"


def effective_listener(caller: str | None, requested: str | None) -> str:
    """The listener a request acts for.

    A signed-in listener acts for themselves (``requested`` may be omitted, ``me`` or their
    own id); an API-key caller names its listener, namespaced by its key so that one
    integrating service never reaches another's listeners; a call without a caller (another
    internal service) names the full listener id. Raises :class:`ProblemError` (403, 422).
    """
    if caller and caller.startswith("session:"):
        own = caller.removeprefix("session:")
        if requested not in (None, "me", own, f"spotify:{own}"):
            raise ProblemError(403, "a signed-in listener can only act for themselves")
        return f"spotify:{own}"
    if caller and caller.startswith("key:"):
        if requested is None:
            raise ProblemError(
                422, "listener_id is required when calling with an API key", field="listener_id"
            )
        if not CALLER_LISTENER_ID_RE.match(requested):
            raise ProblemError(
                422,
                f"listener_id {requested!r} must be 1-128 letters, digits or ._@-",
                field="listener_id",
            )
        return f"key:{caller.removeprefix('key:')}:{requested}"
    if requested is None or not LISTENER_ID_RE.match(requested):
        raise ProblemError(422, "listener_id is required: a full listener id", field="listener_id")
    return requested
