"""What a listener's state means for one recommendation: extra seeds and blocked songs.

Pure functions of the index and a :class:`ListenerState` (``docs/listener-loop.md``):

- liked songs (newest first, at most ``like_limit``) become extra seeds weighted by
  recency (:func:`emergify_recommender.listeners.like_seeds`); a like the catalog does not
  know is skipped;
- disliked songs are blocked;
- a banned track stands for its artists: every song sharing an artist with it is blocked,
  where "same artist" is what the playlist rules use (the index's normalized artist hashes);
- songs recommended within the recent window are blocked unless ``include_recent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from emergify_recommender.index import SongIndex
from emergify_recommender.listeners import ListenerState, like_seeds


@dataclass(frozen=True)
class ListenerPlan:
    """A listener's contribution to one ranking."""

    listener_id: str
    like_rows: tuple[int, ...]  # index rows of liked songs, newest first
    like_weights: tuple[float, ...]  # parallel to like_rows, in (0, 1]
    blocked: frozenset[int]  # index rows never to return


def _rows(index: SongIndex, track_ids: frozenset[str]) -> list[int]:
    rows = (index.position(t) for t in track_ids)
    return [r for r in rows if r is not None]


def rows_of_artists(index: SongIndex, artist_keys: set[int]) -> np.ndarray:
    """Every index row crediting one of ``artist_keys`` (the index's artist hashes)."""
    if not artist_keys:
        return np.empty(0, dtype=np.int64)
    column = index.artist_hashes
    offsets = np.asarray(column.offsets, dtype=np.int64)
    values = np.asarray(column.values)
    hit = np.isin(values, np.fromiter(artist_keys, dtype=values.dtype, count=len(artist_keys)))
    owners = np.repeat(np.arange(offsets.size - 1, dtype=np.int64), np.diff(offsets))
    return np.unique(owners[hit])


def banned_rows(index: SongIndex, banned_tracks: frozenset[str]) -> np.ndarray:
    """The songs of the artists of ``banned_tracks`` (tracks the index does not hold are
    resolved by nothing: their artists are unknown here)."""
    keys: set[int] = set()
    for row in _rows(index, banned_tracks):
        keys.update(int(k) for k in index.artist_hashes[row])
    return rows_of_artists(index, keys)


def plan_for(
    index: SongIndex,
    state: ListenerState,
    now: datetime,
    *,
    include_recent: bool,
    like_half_life_days: float,
    like_limit: int,
) -> ListenerPlan:
    """The extra seeds and blocked rows of one listener for one request."""
    likes = []
    for track_id, weight in like_seeds(state, now, like_half_life_days, len(state.likes)):
        row = index.position(track_id)
        if row is not None:
            likes.append((row, weight))
        if len(likes) == like_limit:
            break
    blocked = set(_rows(index, state.disliked))
    blocked.update(banned_rows(index, state.banned_tracks).tolist())
    if not include_recent:
        blocked.update(_rows(index, state.recent))
    return ListenerPlan(
        listener_id=state.listener_id,
        like_rows=tuple(r for r, _ in likes),
        like_weights=tuple(w for _, w in likes),
        blocked=frozenset(blocked),
    )
