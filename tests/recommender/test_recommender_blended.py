"""The blended ranking (audio L1 + w x artist-profile L1, docs/similarity.md) against brute
force: several weights (0 included), multi-artist songs under every rule, features-only
queries, a song streamed in with a new artist, and profiles changed by ``artists_changed``."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from ranking_reference import brute_force, synthetic_records

from emergify_contracts.artist_profiles import (
    ArtistProfiles,
    SongChange,
    apply_song_changes,
    artist_keys,
    artist_profiles,
    song_artist_vectors,
)
from emergify_recommender import nearest
from emergify_recommender import ranking as ranking_module
from emergify_recommender.artist_vectors import Similarity
from emergify_recommender.build import build_index, remodeled, with_profiles, with_songs
from emergify_recommender.index import SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import query_vector, rank
from emergify_recommender.records import SongRecord

WEIGHTS = [0.0, 0.5, 4.0, 12.0]
RULES: list[dict[str, Any]] = [
    {},
    {"max_per_artist": 1},
    {"max_popularity": 30},
    {"max_per_artist": 10_000},
]


def coherent_records(n: int, seed: int) -> list[SongRecord]:
    """The synthetic catalog, but an artist's songs come from one blob (as in real data),
    so profiles differ between artists; 20% of songs credit two artists."""
    records = synthetic_records(n, seed)
    rng = np.random.default_rng(seed + 100)
    return [
        replace(r, artists=(f"Artist {i % 90}",))
        if rng.random() < 0.8
        else replace(r, artists=(f"Artist {i % 90}", f"Artist {rng.integers(0, 90)}"))
        for i, r in enumerate(records)
    ]


def keys_of(records: list[SongRecord]) -> list[tuple[str, ...]]:
    return [artist_keys(r.artists, r.artist_ids) for r in records]


def profiles_of(model: LoadedModel, records: list[SongRecord]) -> ArtistProfiles:
    """What the batch layer computes: every artist's sums over its songs' standardized z."""
    z = (np.array([r.features for r in records]) - model.means) / model.scales
    return artist_profiles(z, keys_of(records))


@pytest.fixture(scope="module")
def model(rec: Any) -> LoadedModel:
    x = np.array([r.features for r in coherent_records(6000, seed=1)])
    return LoadedModel.from_portable(rec.fit_portable_model(x, k=20, version=1))


def blended_index(records: list[SongRecord], model: LoadedModel) -> SongIndex:
    """A blended index (w = 4) with small cells, so pruning really happens."""
    return build_index(
        records,
        model,
        leaf=24,
        profiles=profiles_of(model, records),
        similarity=Similarity(4.0, "weighted"),
    )


@pytest.fixture(scope="module")
def blended(model: LoadedModel) -> SongIndex:
    return blended_index(coherent_records(6000, seed=1), model)


def same(got: list, expected: list) -> None:
    assert [r.row for r in got] == [r.row for r in expected]
    assert [r.distance for r in got] == [r.distance for r in expected]
    assert [r.seed for r in got] == [r.seed for r in expected]


def test_artist_vectors_follow_the_profiles_under_every_rule(model: LoadedModel) -> None:
    records = coherent_records(3000, seed=3)
    profiles = profiles_of(model, records)
    z = (np.array([r.features for r in records]) - model.means) / model.scales
    assert sum(len(k) > 1 for k in keys_of(records)) > 300, "multi-artist songs are covered"
    for rule in ("weighted", "mean", "first"):
        index = build_index(records, model, profiles=profiles, similarity=Similarity(2.0, rule))
        expected = song_artist_vectors(profiles, keys_of(records), rule, z)
        np.testing.assert_array_equal(index.a_of(np.arange(len(records))), expected)
        assert len(index.artist_table or ()) == len(set(keys_of(records))), "one per credit list"
    # The weighted rule by hand, for one two-artist song: the mean z over both artists' songs.
    keys = keys_of(records)
    i = next(i for i, k in enumerate(keys) if len(k) == 2)
    rows = [j for j, k in enumerate(keys) for key in k if key in keys[i]]
    weighted = song_artist_vectors(profiles, keys_of(records), "weighted", z)[i]
    np.testing.assert_allclose(weighted, z[rows].mean(axis=0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight", WEIGHTS)
@pytest.mark.parametrize("rules", RULES)
def test_blended_ranking_equals_brute_force(
    blended: SongIndex, weight: float, rules: dict[str, Any]
) -> None:
    assert blended.blended and blended.cells.lo.shape[1] == 18
    assert blended.cells.n_cells > 200, "many small cells, so pruning really happens"
    rng = np.random.default_rng(int(weight * 10) + len(str(rules)))
    for _ in range(15):
        seeds = rng.choice(len(blended), size=int(rng.integers(1, 4)), replace=False).tolist()
        exclude = rng.choice(len(blended), size=5, replace=False).tolist()
        queries = query_vector(blended, seeds)
        limit = int(rng.integers(1, 60))
        kw = dict(seeds=seeds, exclude=exclude, artist_weight=weight, **rules)
        same(
            rank(blended, queries, None, limit, **kw),
            brute_force(blended, queries, limit, **kw),
        )


def test_weighted_seeds_and_features_only_queries_are_exact(blended: SongIndex) -> None:
    rng = np.random.default_rng(5)
    for weight in (None, 1.5):
        for _ in range(10):
            seeds = rng.choice(len(blended), size=3, replace=False).tolist()
            qw = np.array([1.0, 0.5, 0.25])
            queries = query_vector(blended, seeds)
            kw = dict(seeds=seeds, query_weights=qw, artist_weight=weight)
            same(rank(blended, queries, None, 25, **kw), brute_force(blended, queries, 25, **kw))
            # A feature vector (no artist) searches with a = z.
            q = rng.normal(0, 2, size=9)
            same(
                rank(blended, q, None, 25, artist_weight=weight),
                brute_force(blended, q, 25, artist_weight=weight),
            )
            assert blended.search_queries(q).shape == (1, 18)


def test_weight_zero_is_the_audio_ranking(model: LoadedModel, blended: SongIndex) -> None:
    audio = build_index(coherent_records(6000, seed=1), model, leaf=24)
    rng = np.random.default_rng(8)
    for seed in rng.choice(len(blended), size=10, replace=False).tolist():
        got = rank(blended, query_vector(blended, [seed]), None, 30, seeds=[seed], artist_weight=0)
        plain = rank(audio, query_vector(audio, [seed]), None, 30, seeds=[seed])
        assert [(r.row, r.distance) for r in got] == [(r.row, r.distance) for r in plain]
    # And the default weight is not 0: the blend changes the answer.
    seed = 11
    got = rank(blended, query_vector(blended, [seed]), None, 30, seeds=[seed])
    plain = rank(audio, query_vector(audio, [seed]), None, 30, seeds=[seed])
    assert [r.row for r in got] != [r.row for r in plain]


def _speed_layer(
    model: LoadedModel, profiles: ArtistProfiles, changes: list[tuple[Any, Any]]
) -> tuple[ArtistProfiles, ArtistProfiles]:
    """What the speed layer does: apply the songs' changes to the sums; returns the new
    profiles and the changed rows only (what ``artists_changed`` announces)."""

    def version(r: SongRecord | None) -> tuple[np.ndarray, tuple[str, ...]] | None:
        if r is None:
            return None
        z = (np.array(r.features) - model.means) / model.scales
        return z, artist_keys(r.artists, r.artist_ids)

    new = apply_song_changes(profiles, [SongChange(version(b), version(a)) for b, a in changes])
    touched = sorted({k for b, a in changes for r in (b, a) if r for k in version(r)[1]})
    at = new.position()
    rows = [at[k] for k in touched]
    return new, ArtistProfiles(tuple(touched), new.sums[rows], new.counts[rows])


def test_a_song_with_a_new_artist_is_recommendable_with_its_profile(
    model: LoadedModel, blended: SongIndex
) -> None:
    records = coherent_records(6000, seed=1)
    profiles = profiles_of(model, records)
    newcomer = replace(
        synthetic_records(3, seed=9, start=50_000)[0],
        artists=("Brand New Artist", "Artist 3"),
        table_version=2,
        popularity=5,
    )
    _, changed = _speed_layer(model, profiles, [(None, newcomer)])
    assert "name:brand new artist" in changed.keys
    # The catalog applies the changed profiles first, then the songs.
    index = with_songs(with_profiles(blended, changed), [newcomer])
    row = index.position(newcomer.track_id)
    assert row is not None
    expected = song_artist_vectors(
        apply_song_changes(profiles, [SongChange(None, _speed_layer_version(model, newcomer))]),
        [artist_keys(newcomer.artists)],
        "weighted",
    )[0]
    np.testing.assert_allclose(index.a_of([row])[0], expected, rtol=1e-12, atol=1e-12)
    # Its own vector is nearest to itself, and every ranking stays exact.
    got = rank(index, index.vectors_of([row]), None, 5)
    assert got[0].row == row and got[0].distance == 0.0
    rng = np.random.default_rng(2)
    for seed in [row, *rng.choice(len(index), size=10, replace=False).tolist()]:
        q = query_vector(index, [seed])
        same(rank(index, q, None, 30, seeds=[seed]), brute_force(index, q, 30, seeds=[seed]))


def _speed_layer_version(model: LoadedModel, r: SongRecord) -> tuple[np.ndarray, tuple[str, ...]]:
    return (np.array(r.features) - model.means) / model.scales, artist_keys(r.artists)


def test_a_song_whose_artist_has_no_profile_yet_uses_its_own_sound_until_it_has(
    model: LoadedModel, blended: SongIndex
) -> None:
    newcomer = replace(
        synthetic_records(3, seed=10, start=60_000)[0],
        artists=("Nobody Yet",),
        table_version=2,
    )
    index = with_songs(blended, [newcomer])  # the event's profiles not applied (a race)
    row = index.position(newcomer.track_id)
    assert row is not None
    np.testing.assert_array_equal(index.a_of([row]), index.z_of([row]))
    profile = _speed_layer_version(model, newcomer)[0] * 3 + 0.5
    index = with_profiles(
        index, ArtistProfiles(("name:nobody yet",), profile[None, :] * 2, np.array([2]))
    )
    np.testing.assert_allclose(index.a_of([row])[0], profile, rtol=1e-12)
    q = query_vector(index, [row])
    same(rank(index, q, None, 30, seeds=[row]), brute_force(index, q, 30, seeds=[row]))


def test_profiles_changed_by_artists_changed_stay_exact(
    model: LoadedModel, blended: SongIndex
) -> None:
    records = coherent_records(6000, seed=1)
    profiles = profiles_of(model, records)
    # Songs of artists 4 and 7 move far away, and change credits: their artists' profiles
    # move, and every other song crediting those artists changes its artist vector.
    moved = [
        replace(
            r,
            features=tuple((np.array(r.features) * 0.3).tolist()),
            artists=("Artist 7",) if "Artist 4" in r.artists else r.artists,
            table_version=2,
        )
        for r in records
        if set(r.artists) & {"Artist 4", "Artist 7"}
    ][::2]
    old = {r.track_id: r for r in records}
    new_profiles, changed = _speed_layer(model, profiles, [(old[m.track_id], m) for m in moved])
    index = with_songs(with_profiles(blended, changed), moved)
    everyone = {**old, **{m.track_id: m for m in moved}}
    ordered = [everyone[index.track_id(i)] for i in range(len(index))]
    z = index.z_of(np.arange(len(index)))
    np.testing.assert_allclose(
        index.a_of(np.arange(len(index))),
        song_artist_vectors(new_profiles, keys_of(ordered), "weighted", z),
        rtol=1e-9,
        atol=1e-12,
    )
    rng = np.random.default_rng(6)
    affected = [index.position(m.track_id) for m in moved[:5]]
    for seed in [*affected, *rng.choice(len(index), size=10, replace=False).tolist()]:
        q = query_vector(index, [seed])
        for weight in (None, 8.0):
            kw = dict(seeds=[seed], artist_weight=weight)
            same(rank(index, q, None, 30, **kw), brute_force(index, q, 30, **kw))


def crowded_records(seed: int) -> list[SongRecord]:
    """The synthetic catalog plus one artist crowding a corner of it: 300 songs of "Dense"
    close together, 12 copies of one title (duplicates under the rules), 20 co-credited
    with "Partner", and 10 credited by one artist id under two spellings (one artist
    combination, two sets of artist names)."""
    records = synthetic_records(3000, seed)
    rng = np.random.default_rng(seed)
    centre = np.array(records[0].features)
    spread = np.abs(centre) * 0.02 + 0.01

    def near(i: int, scale: float = 1.0) -> tuple[float, ...]:
        return tuple((centre + rng.normal(0, 1, 9) * spread * scale).round(4).tolist())

    def song(i: int, name: str, artists: tuple[str, ...], **kw: Any) -> SongRecord:
        return SongRecord(
            track_id=f"Crowd{i:017d}",
            name=name,
            artists=artists,
            features=near(i, kw.pop("scale", 1.0)),
            table_version=1,
            popularity=int(rng.integers(0, 100)),
            **kw,
        )

    crowd = [song(i, f"Dense song {i}", ("Dense",)) for i in range(300)]
    crowd += [song(300 + i, "Twin", ("Dense",), scale=0.05) for i in range(12)]
    crowd += [song(400 + i, f"Duet {i}", ("Dense", "Partner")) for i in range(20)]
    crowd += [
        song(500 + i, f"Spelled {i}", ("Dense Two" if i % 2 else "Dense 2",), artist_ids=("id2",))
        for i in range(10)
    ]
    return records + crowd


@pytest.fixture(scope="module")
def crowded(model: LoadedModel) -> SongIndex:
    return blended_index(crowded_records(seed=9), model)


@pytest.mark.parametrize("weight", [0.0, 4.0])
@pytest.mark.parametrize("max_per_artist", [1, 2, 3])
def test_the_per_combination_cap_never_changes_the_answer(
    crowded: SongIndex, weight: float, max_per_artist: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search keeps at most max_per_artist + 1 songs of one artist combination (the
    rules would drop the rest); the answer still equals the brute force, also when the
    songs it kept are duplicates of the seed (then the ranking must search again without
    the cap) or blocked, and when one combination's songs spell their artists two ways."""
    caps: list[int] = []
    search = ranking_module.search_capped

    def recorded(*args: Any, **kw: Any) -> Any:
        caps.append(kw["per_combination"])
        return search(*args, **kw)

    monkeypatch.setattr(ranking_module, "search_capped", recorded)
    rows = {crowded.names[i]: i for i in range(len(crowded))}
    twins = [i for i in range(len(crowded)) if crowded.names[i] == "Twin"]
    spelled = [i for i in range(len(crowded)) if crowded.names[i].startswith("Spelled")]
    cases = [
        ([rows["Dense song 7"]], []),
        ([rows["Dense song 7"]], [rows["Dense song 8"], *twins[:3]]),
        ([twins[0]], []),  # the nearest songs are the seed's duplicates
        ([spelled[0]], []),
        ([rows["Duet 3"], rows["Dense song 40"]], [spelled[1]]),
    ]
    fell_back = 0
    for seeds, exclude in cases:
        for limit in (5, 30):
            caps.clear()
            kw = dict(seeds=seeds, exclude=exclude, artist_weight=weight)
            queries = query_vector(crowded, seeds)
            got = rank(crowded, queries, None, limit, max_per_artist=max_per_artist, **kw)
            same(got, brute_force(crowded, queries, limit, max_per_artist=max_per_artist, **kw))
            assert caps[0] == max_per_artist
            fell_back += 0 in caps
    # The duplicates of the seed filled its combination's room: proven unsafe, searched again.
    assert fell_back >= 1


def test_a_new_model_remodels_the_index_as_a_full_build_would(rec: Any, model: LoadedModel) -> None:
    """A newly published model (other scaler, centroids and artist profiles) applied to the
    songs already loaded gives the index a full build under that model gives: the same
    clusters, vectors and answers (the rows are the same: same records, same order)."""
    records = coherent_records(6000, seed=1)
    old = build_index(
        records, model, profiles=profiles_of(model, records), similarity=Similarity(4.0, "weighted")
    )
    # Songs streamed in later, one with an artist no profile knows yet (its own sound).
    later = [replace(r, table_version=2) for r in synthetic_records(40, seed=9, start=10_000)] + [
        replace(synthetic_records(3, seed=10, start=20_000)[0], artists=("Nobody Yet",))
    ]
    old = with_songs(old, later)
    everything = records + later
    x = np.array([r.features for r in everything])
    v2 = LoadedModel.from_portable(rec.fit_portable_model(x[::2] * 1.01, k=12, version=2))
    profiles = profiles_of(v2, records)  # the batch layer's: "Nobody Yet" has no profile
    similarity = Similarity(2.0, "mean")

    got = remodeled(old, v2, profiles=profiles, similarity=similarity)
    assert got is not None
    expected = build_index(everything, v2, profiles=profiles, similarity=similarity)
    assert np.array_equal(got.ids, expected.ids)
    assert (got.model_version, got.artist_weight, got.similarity) == (2, 2.0, similarity)
    assert np.array_equal(got.clusters, expected.clusters)
    rows = np.arange(len(got))
    assert np.array_equal(got.vectors_of(rows), expected.vectors_of(rows))
    for seed in (0, 17, 4321, len(got) - 1):
        for rules in RULES:
            q = query_vector(got, [seed])
            same(rank(got, q, seeds=[seed], **rules), rank(expected, q, seeds=[seed], **rules))
            same(
                rank(got, q, seeds=[seed], artist_weight=0.0, **rules),
                brute_force(expected, q, 30, seeds=[seed], artist_weight=0.0, **rules),
            )

    # A model without profiles: the audio-only index, as a full build makes it.
    audio = remodeled(old, v2)
    assert audio is not None and not audio.blended
    assert np.array_equal(audio.z_of(rows), build_index(everything, v2).z_of(rows))
    # An index built before any model kept no credits: only a full build can add profiles.
    assert (
        remodeled(build_index(records, None), v2, profiles=profiles, similarity=similarity) is None
    )


@pytest.mark.parametrize("weight", [0.0, 4.0])
def test_a_left_out_log_that_runs_out_of_room_searches_again(
    crowded: SongIndex, weight: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The kernel's log of the songs the per-combination cap left out has a fixed room (it
    never grows inside the loop); a search that needs more says how much and runs again
    with it, so the answer is the same with a room of one entry."""
    kernel_calls: list[int] = []
    kernel = nearest._search

    def counted(*args: Any) -> Any:
        kernel_calls.append(args[-1])
        return kernel(*args)

    rows = {crowded.names[i]: i for i in range(len(crowded))}
    cases = [[rows["Dense song 7"]], [rows["Duet 3"], rows["Dense song 40"]]]
    answers = {}
    for room in (nearest._LOG_ROOM, 1):
        monkeypatch.setattr(nearest, "_LOG_ROOM", room)
        monkeypatch.setattr(nearest, "_search", counted)
        kernel_calls.clear()
        for seeds in cases:
            queries = query_vector(crowded, seeds)
            kw = dict(seeds=seeds, artist_weight=weight, max_per_artist=1)
            got = rank(crowded, queries, None, 30, **kw)
            same(got, brute_force(crowded, queries, 30, **kw))
            answers.setdefault(tuple(seeds), []).append([(r.row, r.distance) for r in got])
        if room == 1:
            assert max(kernel_calls) > 1, "the crowded artist's songs overflowed a 1-entry log"
    assert all(a == b for a, b in answers.values())


_AFTER_WARM = """
import pickle, sys
from emergify_recommender import nearest, ranking
from emergify_recommender.ranking import query_vector, rank

index = pickle.load(open(sys.argv[1], "rb"))
ranking.warm(index)
kernels = (nearest._search, nearest._bounds, nearest.greedy_rules, nearest.left_out_dominated)
before = [set(k.signatures) for k in kernels]
for s in (1, 7, 40):
    for w in (None, 0.0, 1.5):
        for kw in ({}, {"max_popularity": 30}, {"max_per_artist": 1}, {"exclude": [3, 4]}):
            rank(index, query_vector(index, [s]), None, 20, seeds=[s], artist_weight=w, **kw)
            two = [s, s + 1]
            rank(index, query_vector(index, two), None, 20, seeds=two, artist_weight=w, **kw)
print(sum(len(set(k.signatures) - b) for k, b in zip(kernels, before)))
"""


def test_warming_an_index_compiles_every_kernel_a_request_needs(
    blended: SongIndex, tmp_path: Any
) -> None:
    """After ``ranking.warm(index)`` no request on that index makes numba compile (a first
    request paid seconds for it in a fresh deployment): in a fresh process, since numba
    keeps its specializations per process, the kernels' signatures after requests of every
    kind are those the warm-up produced. The index is unpickled, as a saved index is
    (its arrays come back writable, unlike a fresh build's)."""
    path = tmp_path / "index.pkl"
    path.write_bytes(pickle.dumps(replace(blended, model=None)))
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_WARM, str(path)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[-1] == "0", "a request compiled a kernel the warm-up did not"
