"""Which songs of a micro-batch enter which living playlists.

A living playlist (a subscription) holds its ``size`` nearest songs to its seeds; a new song
enters when it is closer than the subscription's current furthest song and passes the
subscription's popularity rule. Every (subscription, new song) pair is checked by one compiled
loop: the vectors are few (a micro-batch) and the subscriptions many, so a plain exact scan with
early exit beats an index whose pruning would fail on the wide radii of small catalogs.

The distance is the ranking's: the L1 distance to the nearest seed over vectors that already
carry the ranking's per-dimension weights (see :func:`weighted`), each seed's distance divided
by its weight (a seed liked long ago reaches less far than a fresh one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: Popularity of a song whose popularity is unknown; such a song passes every threshold.
UNKNOWN_POPULARITY = -1
#: A subscription without a popularity threshold.
NO_THRESHOLD = 101


def weighted(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``vectors`` with each dimension multiplied by its weight, as contiguous float32, so
    that a plain L1 distance on the result is the ranking's weighted L1 distance."""
    out = np.ascontiguousarray(vectors, dtype=np.float32) * np.asarray(weights, np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)


@dataclass(frozen=True)
class Subscriptions:
    """Every subscription's seeds and bounds, as flat arrays (``S`` subscriptions, ``Q`` seeds).

    ``seed_offsets[s]:seed_offsets[s + 1]`` are subscription ``s``'s rows of ``seed_vectors``
    and ``seed_weights``; ``worst[s]`` is the distance of its furthest song (``inf`` while it
    holds fewer than ``size`` songs, so any song that passes the rules enters).
    """

    seed_vectors: np.ndarray  # float32 (Q, d), already weighted
    seed_weights: np.ndarray  # float32 (Q,), in (0, 1]
    seed_offsets: np.ndarray  # int64 (S + 1,)
    worst: np.ndarray  # float32 (S,)
    max_popularity: np.ndarray  # int16 (S,); NO_THRESHOLD when none

    def __post_init__(self) -> None:
        count = len(self.worst)
        if self.seed_offsets.shape != (count + 1,) or self.max_popularity.shape != (count,):
            raise ValueError("seed_offsets must have S + 1 entries and max_popularity S")
        if len(self.seed_vectors) != len(self.seed_weights):
            raise ValueError("one weight per seed")
        if self.seed_offsets[0] != 0 or self.seed_offsets[-1] != len(self.seed_vectors):
            raise ValueError("seed_offsets must start at 0 and end at the seed count")
        if np.any(np.diff(self.seed_offsets) < 1):
            raise ValueError("every subscription needs at least one seed")
        if np.any(self.seed_weights <= 0) or np.any(self.seed_weights > 1):
            raise ValueError("seed weights are in (0, 1]")

    def __len__(self) -> int:
        return len(self.worst)


@dataclass(frozen=True)
class Entries:
    """Pairs (subscription, song) where the song would enter, with its distance."""

    subscription: np.ndarray  # int64, ascending
    song: np.ndarray  # int64
    distance: np.ndarray  # float32

    def __len__(self) -> int:
        return len(self.subscription)


@numba.njit(cache=True, nogil=True, fastmath=True)
def _count_and_fill(
    seeds: np.ndarray,
    inverse_weights: np.ndarray,
    offsets: np.ndarray,
    worst: np.ndarray,
    max_popularity: np.ndarray,
    songs: np.ndarray,
    popularity: np.ndarray,
    out_sub: np.ndarray,
    out_song: np.ndarray,
    out_distance: np.ndarray,
) -> int:
    """Fill the out arrays with entering pairs; returns how many there are (may exceed the
    arrays' length: the caller then grows them and calls again)."""
    found = 0
    capacity = out_sub.shape[0]
    count, dims = songs.shape
    best = np.empty(count, np.float32)
    for s in range(worst.shape[0]):
        bound = worst[s]
        best[:] = bound
        # Whole distances, no early exit: a branch per dimension stops the compiler from
        # vectorizing the sum, which costs far more than the work an early exit saves.
        for q in range(offsets[s], offsets[s + 1]):
            scale = inverse_weights[q]
            for j in range(count):
                acc = np.float32(0.0)
                for k in range(dims):
                    acc += abs(seeds[q, k] - songs[j, k])
                acc *= scale
                if acc < best[j]:
                    best[j] = acc
        threshold = max_popularity[s]
        for j in range(count):
            pop = popularity[j]
            if best[j] < bound and (pop == -1 or pop <= threshold):
                if found < capacity:
                    out_sub[found] = s
                    out_song[found] = j
                    out_distance[found] = best[j]
                found += 1
    return found


def entering(subscriptions: Subscriptions, songs: np.ndarray, popularity: np.ndarray) -> Entries:
    """Every (subscription, song) pair where the song is closer than the subscription's
    furthest song and passes its popularity threshold; exact.

    ``songs`` are the micro-batch's weighted vectors (``M × d``), ``popularity`` their
    popularity (``UNKNOWN_POPULARITY`` when unknown).
    """
    songs = np.ascontiguousarray(songs, dtype=np.float32)
    popularity = np.ascontiguousarray(popularity, dtype=np.int16)
    if songs.ndim != 2 or songs.shape[1] != subscriptions.seed_vectors.shape[1]:
        raise ValueError("songs must be M x d with the seeds' d")
    if popularity.shape != (len(songs),):
        raise ValueError("one popularity per song")
    inverse = (1.0 / subscriptions.seed_weights).astype(np.float32)
    args = (
        np.ascontiguousarray(subscriptions.seed_vectors, dtype=np.float32),
        inverse,
        subscriptions.seed_offsets.astype(np.int64),
        subscriptions.worst.astype(np.float32),
        subscriptions.max_popularity.astype(np.int16),
        songs,
        popularity,
    )
    capacity = max(1024, 4 * len(songs))
    while True:
        out_sub = np.empty(capacity, np.int64)
        out_song = np.empty(capacity, np.int64)
        out_distance = np.empty(capacity, np.float32)
        found = _count_and_fill(*args, out_sub, out_song, out_distance)
        if found <= capacity:
            return Entries(out_sub[:found], out_song[:found], out_distance[:found])
        capacity = found


def warm_up() -> None:
    """Compile the kernel (or load it from numba's cache) before the first micro-batch."""
    subs = Subscriptions(
        seed_vectors=np.zeros((1, 2), np.float32),
        seed_weights=np.ones(1, np.float32),
        seed_offsets=np.array([0, 1], np.int64),
        worst=np.array([np.inf], np.float32),
        max_popularity=np.array([NO_THRESHOLD], np.int16),
    )
    entering(subs, np.zeros((1, 2), np.float32), np.zeros(1, np.int16))
