"""Living-playlist matching against a brute-force reference: the same pairs, the same distances."""

from __future__ import annotations

import numpy as np
import pytest

from emergify_recommender.living_match import (
    NO_THRESHOLD,
    UNKNOWN_POPULARITY,
    Subscriptions,
    entering,
    weighted,
)


def reference(
    subs: Subscriptions, songs: np.ndarray, popularity: np.ndarray
) -> dict[tuple[int, int], float]:
    pairs = {}
    for s in range(len(subs)):
        lo, hi = subs.seed_offsets[s], subs.seed_offsets[s + 1]
        seeds = subs.seed_vectors[lo:hi].astype(np.float64)
        weights = subs.seed_weights[lo:hi].astype(np.float64)
        for j, song in enumerate(songs.astype(np.float64)):
            pop = popularity[j]
            if pop != UNKNOWN_POPULARITY and pop > subs.max_popularity[s]:
                continue
            distance = (np.abs(seeds - song).sum(axis=1) / weights).min()
            if distance < subs.worst[s]:
                pairs[(s, j)] = float(distance)
    return pairs


def random_case(seed: int, count: int, songs: int, dims: int = 18):
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 5, count)
    offsets = np.concatenate(([0], np.cumsum(per))).astype(np.int64)
    weights = np.ones(dims)
    weights[9:] = 0.7  # an artist-profile half with its own weight
    subs = Subscriptions(
        seed_vectors=weighted(rng.standard_normal((offsets[-1], dims)), weights),
        seed_weights=rng.uniform(0.2, 1.0, offsets[-1]).astype(np.float32),
        seed_offsets=offsets,
        worst=np.where(rng.random(count) < 0.1, np.inf, rng.uniform(4.0, 14.0, count)).astype(
            np.float32
        ),
        max_popularity=np.where(
            rng.random(count) < 0.3, NO_THRESHOLD, rng.integers(0, 60, count)
        ).astype(np.int16),
    )
    vectors = weighted(rng.standard_normal((songs, dims)), weights)
    popularity = np.where(
        rng.random(songs) < 0.2, UNKNOWN_POPULARITY, rng.integers(0, 100, songs)
    ).astype(np.int16)
    return subs, vectors, popularity


@pytest.mark.parametrize("case", range(5))
def test_entering_equals_brute_force(case: int) -> None:
    subs, vectors, popularity = random_case(case, count=60, songs=40)
    got = entering(subs, vectors, popularity)
    pairs = {
        (int(s), int(j)): float(d)
        for s, j, d in zip(got.subscription, got.song, got.distance, strict=True)
    }
    expected = reference(subs, vectors, popularity)
    assert pairs.keys() == expected.keys()
    for pair, distance in expected.items():
        assert pairs[pair] == pytest.approx(distance, rel=1e-5)
    assert len(got) > 0  # the case exercises entries, not only refusals


def test_more_entries_than_the_first_guess() -> None:
    # Every song enters every subscription (worst = inf): far past the initial capacity.
    subs, vectors, popularity = random_case(7, count=300, songs=20)
    subs = Subscriptions(
        subs.seed_vectors,
        subs.seed_weights,
        subs.seed_offsets,
        np.full(len(subs), np.inf, np.float32),
        np.full(len(subs), NO_THRESHOLD, np.int16),
    )
    got = entering(subs, vectors, popularity)
    assert len(got) == 300 * 20
    assert np.all(np.diff(got.subscription) >= 0)


def test_popularity_threshold_and_unknown_popularity() -> None:
    subs = Subscriptions(
        seed_vectors=np.zeros((1, 2), np.float32),
        seed_weights=np.ones(1, np.float32),
        seed_offsets=np.array([0, 1]),
        worst=np.array([10.0], np.float32),
        max_popularity=np.array([20], np.int16),
    )
    songs = np.array([[1, 0], [1, 0], [1, 0]], np.float32)
    got = entering(subs, songs, np.array([20, 21, UNKNOWN_POPULARITY], np.int16))
    assert got.song.tolist() == [0, 2]


def test_a_weaker_seed_reaches_less_far() -> None:
    subs = Subscriptions(
        seed_vectors=np.array([[0, 0], [10, 10]], np.float32),
        seed_weights=np.array([1.0, 0.25], np.float32),
        seed_offsets=np.array([0, 2]),
        worst=np.array([3.0], np.float32),
        max_popularity=np.array([NO_THRESHOLD], np.int16),
    )
    # 1 away from the weak seed counts as 4: it stays out; 2 away from the strong one enters.
    songs = np.array([[10, 11], [1, 1]], np.float32)
    got = entering(subs, songs, np.zeros(2, np.int16))
    assert got.song.tolist() == [1]
    assert got.distance.tolist() == [2.0]


@pytest.mark.parametrize(
    "change",
    [
        {"seed_offsets": np.array([0, 0, 2])},
        {"seed_weights": np.array([0.0, 1.0], np.float32)},
        {"max_popularity": np.array([1, 2], np.int16)},
    ],
)
def test_malformed_subscriptions_are_refused(change: dict) -> None:
    fields = {
        "seed_vectors": np.zeros((2, 2), np.float32),
        "seed_weights": np.ones(2, np.float32),
        "seed_offsets": np.array([0, 2]),
        "worst": np.array([1.0], np.float32),
        "max_popularity": np.array([NO_THRESHOLD], np.int16),
    }
    fields.update(change)
    with pytest.raises(ValueError):
        Subscriptions(**fields)
