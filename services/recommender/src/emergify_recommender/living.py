"""Living playlists, serving side: new catalog songs enter the subscriptions they beat, and
feedback takes songs out at once (design: `docs/listener-loop.md`, "Living playlists").

Each replica keeps every active subscription in memory (seeds, current items, bounds) and
matches each catalog change's songs against all of them with the compiled kernel of
:mod:`emergify_recommender.living_match`. Only the few entering pairs reach the Python rules
(dislikes, banned artists, ``max_per_artist``, already in, duplicates of a seed), and the new
desired set is the ``size`` nearest of current ∪ entering.

Writes are safe with several replicas: a catalog change is written in one transaction that
first inserts its ``living_batches`` row (keyed by table version), so the replica that loses
the race, or a replay, writes nothing; the transaction re-reads the items it merges with, so a
replica whose memory lags never writes from stale state. Feedback removals are idempotent by
nature (a song already gone is not removed twice, and the version bumps only on a removal).
Every written playlist is announced as a :class:`LivingPlaylistChange` for the Spotify sync.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import sqlalchemy as sa
import structlog
from aiokafka import AIOKafkaProducer
from pydantic import ValidationError
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from emergify_contracts.events import CatalogChange
from emergify_contracts.listener import (
    ListenerChange,
    LivingPlaylistChange,
    listener_feedback,
    living_batches,
    living_playlist_items,
    living_playlists,
)
from emergify_recommender.config import Settings
from emergify_recommender.follower import FeedState, KafkaFollower
from emergify_recommender.index import ID_LEN, SongIndex
from emergify_recommender.listeners import FeedbackItem, ListenerState, state_from_rows
from emergify_recommender.living_match import (
    NO_THRESHOLD,
    UNKNOWN_POPULARITY,
    Subscriptions,
    entering,
    warm_up,
    weighted,
)

log = structlog.get_logger()

#: Ids per IN (...) list: far below every database's bound-parameter limit.
_CHUNK = 1000


@dataclass
class Playlist:
    """One active subscription as matching needs it."""

    playlist_id: str
    listener_id: str
    size: int
    max_popularity: int | None
    max_per_artist: int
    seeds: list[tuple[str, float]]  # (track id, weight in (0, 1])
    items: dict[str, float]  # desired track id -> stored distance
    version: int


@dataclass(frozen=True)
class _Matcher:
    """The subscriptions compiled against one index (seed vectors depend on its model)."""

    index: SongIndex
    subscriptions: Subscriptions
    playlist_ids: list[str]  # row s of the subscriptions


@dataclass
class BatchResult:
    """What one catalog change did: the kernel's pairs, the playlists written."""

    table_version: int
    songs: int
    pairs: int
    changes: list[LivingPlaylistChange] = field(default_factory=list)
    already_applied: bool = False


def _playlist_from_row(row: sa.Row, items: dict[str, float]) -> Playlist:
    seeds = [
        (str(s["track_id"]), float(s.get("weight") or 1.0))
        for s in (row.seeds or [])
        if s.get("track_id")
    ]
    return Playlist(
        playlist_id=row.playlist_id,
        listener_id=row.listener_id,
        size=int(row.size),
        max_popularity=row.max_popularity,
        max_per_artist=int(row.max_per_artist),
        seeds=seeds,
        items=items,
        version=int(row.version),
    )


def load_playlists(
    conn: Connection, playlist_ids: Sequence[str] | None = None
) -> dict[str, Playlist]:
    """The active living playlists (all, or those named) with their desired items."""
    query = sa.select(living_playlists).where(living_playlists.c.stopped_at.is_(None))
    if playlist_ids is not None:
        query = query.where(living_playlists.c.playlist_id.in_(list(playlist_ids)))
    rows = conn.execute(query).all()
    if not rows:
        return {}
    items: dict[str, dict[str, float]] = {r.playlist_id: {} for r in rows}
    item_query = sa.select(
        living_playlist_items.c.playlist_id,
        living_playlist_items.c.track_id,
        living_playlist_items.c.distance,
    )
    if playlist_ids is not None:
        item_query = item_query.where(living_playlist_items.c.playlist_id.in_(list(items)))
    for item in conn.execute(item_query):
        if item.playlist_id in items:
            items[item.playlist_id][item.track_id] = float(item.distance)
    return {r.playlist_id: _playlist_from_row(r, items[r.playlist_id]) for r in rows}


def seed_queries(
    index: SongIndex, playlist: Playlist, rows_of: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The playlist's seeds that the index holds: (standardized float64 vectors, weights)."""
    rows, weights = [], []
    for track_id, weight in playlist.seeds:
        row = index.position(track_id) if rows_of is None else rows_of.get(track_id)
        if row is not None:
            rows.append(row)
            weights.append(weight)
    if not rows:
        return np.empty((0, len(index.dim_weights()))), np.empty(0)
    return index.vectors_of(np.asarray(rows, np.int64)), np.asarray(weights, np.float64)


def distances(
    index: SongIndex, queries: np.ndarray, weights: np.ndarray, rows: np.ndarray
) -> np.ndarray:
    """The ranking's distance (float64) of ``rows`` to the nearest seed, each seed's distance
    divided by its weight."""
    if not len(rows):
        return np.empty(0)
    vectors = index.vectors_of(np.asarray(rows, np.int64))
    dims = index.dim_weights()
    per_seed = np.zeros((vectors.shape[0], queries.shape[0]))
    for f, w in enumerate(dims.tolist()):  # terms in dimension order, as the kernel adds them
        per_seed += w * np.abs(vectors[:, None, f] - queries[None, :, f])
    return (per_seed / weights[None, :]).min(axis=1)


def _banned_artists(index: SongIndex, state: ListenerState) -> set[int]:
    banned: set[int] = set()
    for track_id in state.banned_tracks:
        row = index.position(track_id)
        if row is not None:
            banned.update(index.artist_hashes[row])
    return banned


def blocked(index: SongIndex, state: ListenerState, track_id: str) -> bool:
    """Whether the listener's feedback forbids ``track_id`` (disliked, or a banned artist)."""
    if track_id in state.disliked or track_id in state.banned_tracks:
        return True
    row = index.position(track_id)
    if row is None:
        return False
    banned = _banned_artists(index, state)
    return bool(banned) and any(a in banned for a in index.artist_hashes[row])


def positions(index: SongIndex, track_ids: Iterable[str]) -> dict[str, int]:
    """Rows of the ``track_ids`` the index holds, looked up in one vectorized search."""
    ids = [t for t in dict.fromkeys(track_ids) if t.isascii() and 0 < len(t) <= ID_LEN]
    if not ids or not len(index):
        return {}
    keys = np.array([t.encode("ascii") for t in ids], dtype=index.ids.dtype)
    at = np.minimum(np.searchsorted(index.ids, keys, sorter=index.id_order), len(index) - 1)
    rows = index.id_order[at]
    found = index.ids[rows] == keys
    return {t: int(r) for t, r, ok in zip(ids, rows.tolist(), found.tolist(), strict=True) if ok}


def merge(
    index: SongIndex,
    playlist: Playlist,
    current: dict[str, float],
    candidates: dict[str, float],
    state: ListenerState,
    rows: dict[str, int] | None = None,
) -> dict[str, float]:
    """The new desired set: the ``size`` nearest of current ∪ candidates that pass the rules,
    greedily in distance order (ties by track id), as the ranking's rules apply them.
    ``rows`` may hold the songs' index rows, looked up beforehand for many playlists."""
    if rows is None:
        rows = positions(index, [*current, *candidates, *(t for t, _ in playlist.seeds)])
    banned = _banned_artists(index, state)
    seed_rows = [rows[t] for t, _ in playlist.seeds if t in rows]
    seen_dedup = {int(index.dedup_hashes[r]) for r in seed_rows}
    seed_ids = {t for t, _ in playlist.seeds}
    pool = dict(current)
    for track_id, distance in candidates.items():
        if track_id in pool or track_id in seed_ids:
            continue
        if track_id in state.disliked or track_id in state.banned_tracks:
            continue
        pool[track_id] = distance
    per_artist: dict[int, int] = {}
    kept: dict[str, float] = {}
    for track_id, distance in sorted(pool.items(), key=lambda kv: (kv[1], kv[0])):
        if len(kept) >= playlist.size:
            break
        row = rows.get(track_id)
        if row is None:  # a song the index lost: it stays where it was, unjudged
            kept[track_id] = distance
            continue
        artists = set(index.artist_hashes[row])
        if track_id not in current:
            dedup = int(index.dedup_hashes[row])
            if dedup in seen_dedup or (banned and artists & banned):
                continue
        if any(per_artist.get(a, 0) >= playlist.max_per_artist for a in artists):
            continue
        seen_dedup.add(int(index.dedup_hashes[row]))
        for a in artists:
            per_artist[a] = per_artist.get(a, 0) + 1
        kept[track_id] = distance
    return kept


def _write_diff(
    conn: Connection,
    deletes: list[tuple[str, str]],
    inserts: list[dict[str, object]],
    bumps: dict[str, int],
) -> None:
    """Write a batch's diff in a few set statements (thousands of playlists change per
    micro-batch; a statement per row would cost more than the matching)."""
    items = living_playlist_items.c
    for lo in range(0, len(deletes), _CHUNK):
        conn.execute(
            living_playlist_items.delete().where(
                sa.tuple_(items.playlist_id, items.track_id).in_(deletes[lo : lo + _CHUNK])
            )
        )
    if inserts:  # executemany: SQLAlchemy batches it as multi-row INSERTs itself
        conn.execute(living_playlist_items.insert(), inserts)
    by_count: dict[int, list[str]] = {}
    for playlist_id, count in bumps.items():
        by_count.setdefault(count, []).append(playlist_id)
    for count, ids in by_count.items():  # at most `size` distinct counts
        for lo in range(0, len(ids), _CHUNK):
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id.in_(ids[lo : lo + _CHUNK]))
                .values(
                    version=living_playlists.c.version + 1,
                    songs_added=living_playlists.c.songs_added + count,
                )
            )


class _AlreadyApplied(Exception):
    """This catalog change was matched already (a replay, or another replica won)."""


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _claim(conn: Connection, change: CatalogChange, now: datetime) -> bool:
    """Record that this transaction matches ``change``; False when it was matched already.

    A marker older than the change's commit is a table version reused after a rebuild of
    the feature table (versions restart): that change is new, and the marker is taken over
    (compare-and-set, so only one replica wins it)."""
    version = change.table_version
    existing = conn.execute(
        sa.select(living_batches.c.matched_at).where(living_batches.c.table_version == version)
    ).scalar()
    if existing is None:
        try:
            conn.execute(living_batches.insert().values(table_version=version, matched_at=now))
        except IntegrityError as exc:  # another replica inserted it meanwhile
            raise _AlreadyApplied from exc
        return True
    if _utc(existing) >= _utc(change.committed_at):
        return False
    taken = conn.execute(
        living_batches.update()
        .where(
            living_batches.c.table_version == version,
            living_batches.c.matched_at == existing,
        )
        .values(matched_at=now)
    )
    return taken.rowcount == 1


def _rows_of(index: SongIndex, track_ids: Iterable[str]) -> np.ndarray:
    found = (index.position(t) for t in dict.fromkeys(track_ids))
    return np.asarray([r for r in found if r is not None], np.int64)


def _change_rows(change: CatalogChange, index: SongIndex) -> np.ndarray:
    """The index rows of ``change``'s songs: by id, or, for a batch too big to list them,
    the rows whose table version is the change's (``index`` holds the change)."""
    if change.listed:
        return _rows_of(index, change.upserted_ids)
    return np.flatnonzero(index.table_versions == change.table_version).astype(np.int64)


class LivingPlaylists:
    """Every active subscription in memory, matched against each catalog change."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self._settings = settings
        self._engine = engine
        # Dislikes and bans of playlist owners; a listener change drops the ones it names.
        self._states: dict[str, ListenerState] = {}
        self._lock = threading.Lock()  # one merge or reload at a time in this replica
        self.playlists: dict[str, Playlist] = {}
        self._matcher: _Matcher | None = None
        self._producer: AIOKafkaProducer | None = None
        self.batches_matched = 0
        self._pending: deque[CatalogChange] = deque()
        self._latest_index: SongIndex | None = None
        self._wake = asyncio.Event()
        self._follower: KafkaFollower | None = None  # the playlist/listener feed
        self.last_error: str | None = None
        self.last_match_seconds: float | None = None

    @property
    def state(self) -> FeedState:
        """The playlist/listener feed's state, as ``ChangeFeed.state``."""
        return self._follower.state if self._follower is not None else "connecting"

    # --- loading ---------------------------------------------------------------------

    def reload(self, playlist_ids: Sequence[str] | None = None) -> None:
        """Read the active playlists (all, or those named) from the database."""
        with self._engine.connect() as conn:
            loaded = load_playlists(conn, playlist_ids)
        with self._lock:
            if playlist_ids is None:
                self.playlists = loaded
            else:
                for playlist_id in playlist_ids:
                    if playlist_id in loaded:
                        self.playlists[playlist_id] = loaded[playlist_id]
                    else:  # stopped or deleted
                        self.playlists.pop(playlist_id, None)
            self._matcher = None

    def on_playlist_change(self, event: LivingPlaylistChange) -> bool:
        """Reload a playlist this replica does not know at that version; True if reloaded."""
        known = self.playlists.get(event.playlist_id)
        if known is not None and known.version >= event.version:
            return False  # our own write, or one already loaded
        self.reload([event.playlist_id])
        return True

    def matcher(self, index: SongIndex) -> _Matcher | None:
        """The subscriptions compiled for ``index`` (rebuilt after a write, a reload or a new
        model; kept across catalog changes that leave the standardization as it was)."""
        current = self._matcher
        if (
            current is not None
            and current.index.model is index.model
            and np.array_equal(current.index.means, index.means)
            and np.array_equal(current.index.scales, index.scales)
        ):
            return current
        rows: list[int] = []
        weights: list[float] = []
        offsets = [0]
        worst: list[float] = []
        thresholds: list[int] = []
        ids: list[str] = []
        for playlist in self.playlists.values():
            count = 0
            for track_id, weight in playlist.seeds:
                row = index.position(track_id)
                if row is not None:
                    rows.append(row)
                    weights.append(weight)
                    count += 1
            if not count:
                continue  # none of its seeds is in the catalog (yet)
            offsets.append(offsets[-1] + count)
            full = len(playlist.items) >= playlist.size
            worst.append(max(playlist.items.values()) if full and playlist.items else math.inf)
            thresholds.append(
                NO_THRESHOLD if playlist.max_popularity is None else playlist.max_popularity
            )
            ids.append(playlist.playlist_id)
        if not ids:
            self._matcher = None
            return None
        subscriptions = Subscriptions(
            seed_vectors=weighted(
                index.vectors_of(np.asarray(rows, np.int64)), index.dim_weights()
            ),
            seed_weights=np.asarray(weights, np.float32),
            seed_offsets=np.asarray(offsets, np.int64),
            worst=np.asarray(worst, np.float32),
            max_popularity=np.asarray(thresholds, np.int16),
        )
        self._matcher = _Matcher(index, subscriptions, ids)
        return self._matcher

    # --- a catalog change --------------------------------------------------------------

    def match(self, index: SongIndex, track_ids: Iterable[str]) -> dict[str, dict[str, float]]:
        """Per playlist, the songs of ``track_ids`` that beat its furthest song (kernel only:
        popularity is checked, the listener rules are not)."""
        return self.match_rows(index, _rows_of(index, track_ids))

    def match_rows(self, index: SongIndex, rows: np.ndarray) -> dict[str, dict[str, float]]:
        """:meth:`match` for the index's ``rows`` (distinct)."""
        matcher = self.matcher(index)
        if matcher is None or not len(rows):
            return {}
        songs = weighted(index.vectors_of(rows), index.dim_weights())
        popularity = index.popularity[rows].astype(np.int16)
        popularity[popularity < 0] = UNKNOWN_POPULARITY
        found = entering(matcher.subscriptions, songs, popularity)
        out: dict[str, dict[str, float]] = {}
        for s, j, d in zip(found.subscription, found.song, found.distance, strict=True):
            out.setdefault(matcher.playlist_ids[s], {})[index.track_id(int(rows[j]))] = float(d)
        return out

    def apply_catalog_change(self, change: CatalogChange, index: SongIndex) -> BatchResult:
        """Match the change's songs and write every changed playlist in one transaction with
        the change's ``living_batches`` row. Returns the changes to announce."""
        with self._lock:
            result = BatchResult(change.table_version, change.upserted, 0)
            now = datetime.now(UTC)
            written: dict[str, Playlist] = {}
            try:
                with self._engine.begin() as conn:
                    # First: a replica that already wrote this change makes this one stop here.
                    if not _claim(conn, change, now):
                        raise _AlreadyApplied
                    # The replica that claims the change must match it against every playlist
                    # as the database holds it, not as its memory (maybe behind) does.
                    self._catch_up(conn)
                    pairs = self.match_rows(index, _change_rows(change, index))
                    result.pairs = sum(map(len, pairs.values()))
                    if pairs:
                        written = self._write_entries(conn, index, pairs, now)
            except _AlreadyApplied:
                result.already_applied = True
                return result
            for playlist in written.values():
                self.playlists[playlist.playlist_id] = playlist
            if written:
                self._matcher = None
            self.batches_matched += 1
            result.changes = [
                LivingPlaylistChange(playlist_id=p.playlist_id, version=p.version)
                for p in written.values()
            ]
            return result

    def _catch_up(self, conn: Connection) -> None:
        """Reload the playlists whose database version differs from memory's."""
        versions = {
            r.playlist_id: int(r.version)
            for r in conn.execute(
                sa.select(living_playlists.c.playlist_id, living_playlists.c.version).where(
                    living_playlists.c.stopped_at.is_(None)
                )
            )
        }
        stale = [
            playlist_id
            for playlist_id, version in versions.items()
            if playlist_id not in self.playlists or self.playlists[playlist_id].version != version
        ]
        gone = [playlist_id for playlist_id in self.playlists if playlist_id not in versions]
        if not stale and not gone:
            return
        for playlist_id in gone:
            del self.playlists[playlist_id]
        if len(stale) > len(versions) // 2:  # a start or a big gap: one read of everything
            self.playlists = load_playlists(conn)
        else:
            for lo in range(0, len(stale), _CHUNK):
                self.playlists.update(load_playlists(conn, stale[lo : lo + _CHUNK]))
        self._matcher = None

    def _write_entries(
        self,
        conn: Connection,
        index: SongIndex,
        pairs: dict[str, dict[str, float]],
        now: datetime,
    ) -> dict[str, Playlist]:
        fresh = self._locked(conn, sorted(pairs))
        states = self._states_of({p.listener_id for p in fresh.values()}, now)
        rows_of = positions(
            index,
            (
                t
                for playlist_id, playlist in fresh.items()
                for t in (*playlist.items, *pairs[playlist_id], *(t for t, _ in playlist.seeds))
            ),
        )
        written: dict[str, Playlist] = {}
        deletes: list[tuple[str, str]] = []
        inserts: list[dict[str, object]] = []
        bumps: dict[str, int] = {}
        for playlist_id, candidates in pairs.items():
            playlist = fresh.get(playlist_id)
            if playlist is None:
                continue  # stopped meanwhile
            queries, weights = seed_queries(index, playlist, rows_of)
            if not len(queries):
                continue
            ids = list(candidates)
            rows = np.asarray([rows_of[t] for t in ids], np.int64)
            # The kernel's float32 distance picked the pairs; the stored one is the exact one.
            exact = dict(zip(ids, distances(index, queries, weights, rows).tolist(), strict=True))
            state = states[playlist.listener_id]
            desired = merge(index, playlist, playlist.items, exact, state, rows_of)
            added = [t for t in desired if t not in playlist.items]
            if not added:
                continue
            deletes.extend((playlist_id, t) for t in playlist.items if t not in desired)
            inserts.extend(
                {"playlist_id": playlist_id, "track_id": t, "distance": desired[t], "added_at": now}
                for t in added
            )
            bumps[playlist_id] = len(added)
            written[playlist_id] = replace(playlist, items=desired, version=playlist.version + 1)
        _write_diff(conn, deletes, inserts, bumps)
        return written

    def _locked(self, conn: Connection, playlist_ids: Sequence[str]) -> dict[str, Playlist]:
        """The named active playlists as the database holds them, their rows locked (on
        PostgreSQL) until the transaction ends; memory's copy when its version is current."""
        versions: dict[str, int] = {}
        for lo in range(0, len(playlist_ids), _CHUNK):
            query = sa.select(living_playlists.c.playlist_id, living_playlists.c.version).where(
                living_playlists.c.playlist_id.in_(playlist_ids[lo : lo + _CHUNK]),
                living_playlists.c.stopped_at.is_(None),
            )
            if conn.dialect.name == "postgresql":
                # Serializes this merge with another replica's feedback removal on the rows.
                query = query.with_for_update()
            versions.update((r.playlist_id, int(r.version)) for r in conn.execute(query))
        out: dict[str, Playlist] = {}
        stale = []
        for playlist_id, version in versions.items():
            known = self.playlists.get(playlist_id)
            if known is not None and known.version == version:
                out[playlist_id] = replace(known, items=dict(known.items))
            else:
                stale.append(playlist_id)
        for lo in range(0, len(stale), _CHUNK):
            out.update(load_playlists(conn, stale[lo : lo + _CHUNK]))
        return out

    def _states_of(self, listener_ids: Iterable[str], now: datetime) -> dict[str, ListenerState]:
        """Listener states (dislikes, bans), those not cached read in a few queries."""
        missing = [listener for listener in listener_ids if listener not in self._states]
        events: dict[str, list[FeedbackItem]] = {listener: [] for listener in missing}
        with self._engine.connect() as conn:
            for lo in range(0, len(missing), _CHUNK):
                for r in conn.execute(
                    sa.select(
                        listener_feedback.c.listener_id,
                        listener_feedback.c.event_id,
                        listener_feedback.c.track_id,
                        listener_feedback.c.signal,
                        listener_feedback.c.at,
                    ).where(listener_feedback.c.listener_id.in_(missing[lo : lo + _CHUNK]))
                ):
                    events[r.listener_id].append(
                        FeedbackItem(r.event_id, r.track_id, r.signal, r.at)
                    )
        for listener, items in events.items():
            # No history: living playlists do not skip recently recommended songs.
            self._states[listener] = state_from_rows(listener, items, [], now, recent_days=0)
        return {listener: self._states[listener] for listener in listener_ids}

    # --- feedback ----------------------------------------------------------------------

    def apply_listener_change(
        self, listener_ids: Iterable[str], index: SongIndex | None
    ) -> list[LivingPlaylistChange]:
        """Drop the named listeners' disliked songs and banned artists' songs from their
        playlists' desired items; bump each changed playlist's version."""
        listener_ids = list(dict.fromkeys(listener_ids))
        now = datetime.now(UTC)
        changes: list[LivingPlaylistChange] = []
        with self._lock:
            for listener in listener_ids:
                self._states.pop(listener, None)
            with self._engine.begin() as conn:
                # The database, not memory, says who owns playlists: one created a moment ago
                # may not have reached this replica yet.
                ids: list[str] = []
                for lo in range(0, len(listener_ids), _CHUNK):
                    ids.extend(
                        conn.execute(
                            sa.select(living_playlists.c.playlist_id).where(
                                living_playlists.c.listener_id.in_(listener_ids[lo : lo + _CHUNK]),
                                living_playlists.c.stopped_at.is_(None),
                            )
                        ).scalars()
                    )
                if not ids:
                    return []
                fresh = self._locked(conn, ids)
                states = self._states_of({p.listener_id for p in fresh.values()}, now)
                for playlist in fresh.values():
                    state = states[playlist.listener_id]
                    gone = [
                        t
                        for t in playlist.items
                        if t in state.disliked
                        or t in state.banned_tracks
                        or (index is not None and blocked(index, state, t))
                    ]
                    if gone:
                        conn.execute(
                            living_playlist_items.delete().where(
                                living_playlist_items.c.playlist_id == playlist.playlist_id,
                                living_playlist_items.c.track_id.in_(gone),
                            )
                        )
                        conn.execute(
                            living_playlists.update()
                            .where(living_playlists.c.playlist_id == playlist.playlist_id)
                            .values(version=living_playlists.c.version + 1)
                        )
                        for t in gone:
                            playlist.items.pop(t)
                        playlist.version += 1
                        changes.append(
                            LivingPlaylistChange(
                                playlist_id=playlist.playlist_id, version=playlist.version
                            )
                        )
            # Committed: memory follows.
            self.playlists.update(fresh)
            self._matcher = None
        return changes

    # --- Kafka -------------------------------------------------------------------------

    async def publish(self, changes: Sequence[LivingPlaylistChange]) -> None:
        """Announce changed playlists (keyed by playlist, so one playlist's events stay in
        order). A failure is logged: the sync worker also polls ``version > synced_version``."""
        if not changes:
            return
        s = self._settings
        try:
            if self._producer is None:
                # acks=all, no idempotence: the embedded broker cannot InitProducerId.
                producer = AIOKafkaProducer(
                    bootstrap_servers=s.kafka_bootstrap_servers,
                    acks="all",
                    enable_idempotence=False,
                    client_id="emergify-recommender-living",
                )
                await producer.start()
                self._producer = producer
            for change in changes:
                await self._producer.send_and_wait(
                    s.living_playlists_topic,
                    change.model_dump_json().encode(),
                    key=change.playlist_id.encode(),
                )
        except Exception as exc:
            self.last_error = f"publish failed: {type(exc).__name__}: {exc}"
            log.warning("living playlist change not announced", error=self.last_error)
            await self._close_producer()

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:
                log.debug("living producer stop failed", error=str(exc))

    async def on_catalog_change(self, change: CatalogChange, index: SongIndex) -> None:
        """The change feed's hook: queue the change for :meth:`match_forever`, so the change
        feed never waits on a database write of living playlists."""
        self._pending.append(change)
        self._latest_index = index
        self._wake.set()

    async def match_forever(self) -> None:
        """Match queued catalog changes in order, each against the newest index (which holds
        every queued change's songs). Never raises anything but CancelledError."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                change = self._pending.popleft()
                index = self._latest_index
                if index is not None:
                    await self.match_and_announce(change, index)

    async def match_and_announce(self, change: CatalogChange, index: SongIndex) -> None:
        """Match one change, write, announce. Never raises (logs instead)."""
        try:
            result = await asyncio.to_thread(self.apply_catalog_change, change, index)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("living playlists not matched", error=self.last_error)
            return
        if result.changes:
            log.info(
                "living playlists updated",
                table_version=result.table_version,
                playlists=len(result.changes),
                pairs=result.pairs,
            )
        await self.publish(result.changes)

    async def run(self, index_of: Callable[[], SongIndex | None]) -> None:
        """Load the playlists, then consume playlist and listener changes until cancelled.

        No consumer group: every replica needs every event and reloads everything at
        (re)start, so it begins at the latest offset, like the change feed."""
        await asyncio.to_thread(warm_up)  # compile before the first micro-batch, not during
        matching = asyncio.create_task(self.match_forever(), name="living-match")
        try:
            await self._consume(index_of)
        finally:
            matching.cancel()
            await asyncio.gather(matching, return_exceptions=True)
            await self._close_producer()

    async def _consume(self, index_of: Callable[[], SongIndex | None]) -> None:
        async def handle(topic: str, value: bytes | None) -> None:
            await self._apply(topic, value, index_of())

        async def reload() -> None:
            await asyncio.to_thread(self.reload)

        follower = KafkaFollower(
            self._settings,
            "living playlists feed",
            (self._settings.living_playlists_topic, self._settings.listener_changes_topic),
            handle,
            client_id="emergify-recommender-living",
            on_connect=reload,
        )
        self._follower = follower
        await follower.run()

    async def _apply(self, topic: str, value: bytes | None, index: SongIndex | None) -> None:
        if value is None:
            return
        try:
            if topic == self._settings.living_playlists_topic:
                event = LivingPlaylistChange.model_validate_json(value)
                await asyncio.to_thread(self.on_playlist_change, event)
            elif topic == self._settings.listener_changes_topic:
                change = ListenerChange.model_validate_json(value)
                changes = await asyncio.to_thread(
                    self.apply_listener_change, change.listener_ids, index
                )
                await self.publish(changes)
        except ValidationError as exc:
            log.warning("ignoring malformed event", topic=topic, error=str(exc)[:500])
        except Exception as exc:
            log.warning("event not applied", topic=topic, error=f"{type(exc).__name__}: {exc}")
