"""A listener's state as recommendations use it: dislikes, bans, likes as seeds, recent songs.

Read from the listener tables the speed layer materialises (see `docs/listener-loop.md`),
cached per listener and dropped when a listener-change event names the listener, so feedback
changes the next answer as soon as its micro-batch commits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine

from emergify_contracts.listener import FeedbackSignal, listener_feedback, listener_history


@dataclass(frozen=True)
class FeedbackItem:
    """One stored feedback event, as the listener sees it."""

    event_id: str
    track_id: str
    signal: str
    at: datetime


@dataclass(frozen=True)
class ListenerState:
    """What the ranking must honour for one listener."""

    listener_id: str
    disliked: frozenset[str]
    banned_tracks: frozenset[str]  # songs whose artists the listener banned
    likes: tuple[tuple[str, datetime], ...]  # newest first; a later dislike cancels a like
    recent: frozenset[str]  # recommended within the recent window
    events: tuple[FeedbackItem, ...]

    @classmethod
    def empty(cls, listener_id: str) -> ListenerState:
        return cls(listener_id, frozenset(), frozenset(), (), frozenset(), ())


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def state_from_rows(
    listener_id: str,
    events: Iterable[FeedbackItem],
    history: Iterable[tuple[str, datetime]],
    now: datetime,
    recent_days: float,
) -> ListenerState:
    """The state of one listener from their feedback events and recommendation history."""
    ordered = sorted(events, key=lambda e: (_utc(e.at), e.event_id))
    verdict: dict[str, tuple[str, datetime]] = {}  # like / dislike per track: the latest wins
    banned: set[str] = set()
    for item in ordered:
        if item.signal in (FeedbackSignal.LIKE.value, FeedbackSignal.DISLIKE.value):
            verdict[item.track_id] = (item.signal, _utc(item.at))
        elif item.signal == FeedbackSignal.BAN_ARTIST.value:
            banned.add(item.track_id)
    likes = sorted(
        ((track, at) for track, (signal, at) in verdict.items() if signal == "like"),
        key=lambda pair: pair[1],
        reverse=True,
    )
    since = now - timedelta(days=recent_days)
    return ListenerState(
        listener_id=listener_id,
        disliked=frozenset(t for t, (signal, _) in verdict.items() if signal == "dislike"),
        banned_tracks=frozenset(banned),
        likes=tuple(likes),
        recent=frozenset(track for track, at in history if _utc(at) >= since),
        events=tuple(ordered),
    )


def like_seeds(
    state: ListenerState, now: datetime, half_life_days: float, limit: int
) -> list[tuple[str, float]]:
    """The listener's liked songs as extra seeds, newest first, each with a weight in (0, 1]
    halving every ``half_life_days`` of age."""
    seeds = []
    for track, at in state.likes[:limit]:
        age_days = max(0.0, (now - at).total_seconds() / 86_400)
        seeds.append((track, max(1e-3, 0.5 ** (age_days / half_life_days))))
    return seeds


def load_state(
    engine: Engine, listener_id: str, now: datetime, recent_days: float
) -> ListenerState:
    """Read one listener's state from the listener tables."""
    with engine.connect() as conn:
        events = [
            FeedbackItem(r.event_id, r.track_id, r.signal, r.at)
            for r in conn.execute(
                sa.select(
                    listener_feedback.c.event_id,
                    listener_feedback.c.track_id,
                    listener_feedback.c.signal,
                    listener_feedback.c.at,
                ).where(listener_feedback.c.listener_id == listener_id)
            )
        ]
        history = [
            (r.track_id, r.recommended_at)
            for r in conn.execute(
                sa.select(listener_history.c.track_id, listener_history.c.recommended_at).where(
                    listener_history.c.listener_id == listener_id
                )
            )
        ]
    return state_from_rows(listener_id, events, history, now, recent_days)


def record_served(
    engine: Engine, listener_id: str, track_ids: Sequence[str], now: datetime
) -> None:
    """Remember that ``track_ids`` were recommended to the listener now."""
    if not track_ids:
        return
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    stmt = insert(listener_history)
    stmt = stmt.on_conflict_do_update(
        index_elements=[listener_history.c.listener_id, listener_history.c.track_id],
        set_={"recommended_at": stmt.excluded.recommended_at},
    )
    rows = [{"listener_id": listener_id, "track_id": t, "recommended_at": now} for t in track_ids]
    with engine.begin() as conn:
        conn.execute(stmt, rows)


class ListenerStates:
    """Listener states cached by id; a listener-change event drops the ones it names."""

    def __init__(self, engine: Engine, recent_days: float) -> None:
        self.engine = engine
        self.recent_days = recent_days
        self._cache: dict[str, ListenerState] = {}
        # Bumped by each invalidation: a state read before it must not be cached after it.
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped by clear(): nothing read before it may be cached after it
        self._lock = threading.Lock()
        self.version = 0  # the last listener-change version applied

    def get(self, listener_id: str, now: datetime | None = None) -> ListenerState:
        """The listener's state (read from the database on a miss)."""
        with self._lock:
            cached = self._cache.get(listener_id)
            generation = self._generation.get(listener_id, 0)
            epoch = self._epoch
        if cached is not None:
            return cached
        state = load_state(self.engine, listener_id, now or datetime.now(UTC), self.recent_days)
        with self._lock:
            if self._generation.get(listener_id, 0) == generation and self._epoch == epoch:
                self._cache[listener_id] = state
        return state

    def invalidate(self, listener_ids: Iterable[str], version: int | None = None) -> None:
        """Forget the named listeners (their feedback changed)."""
        with self._lock:
            for listener_id in listener_ids:
                self._cache.pop(listener_id, None)
                self._generation[listener_id] = self._generation.get(listener_id, 0) + 1
            if version is not None:
                self.version = max(self.version, version)

    def clear(self) -> None:
        """Forget every cached state (listener-change events may have been missed)."""
        with self._lock:
            self._epoch += 1
            self._cache.clear()

    def served(self, listener_id: str, track_ids: Sequence[str], now: datetime) -> None:
        """Record a recommendation; the cached state (if any) learns the songs at once, so
        the next answer skips them without re-reading the listener's tables."""
        record_served(self.engine, listener_id, track_ids, now)
        with self._lock:
            # A load already under way read the history before this write: never cache it.
            self._generation[listener_id] = self._generation.get(listener_id, 0) + 1
            cached = self._cache.get(listener_id)
            if cached is not None:
                self._cache[listener_id] = replace(cached, recent=cached.recent | set(track_ids))
