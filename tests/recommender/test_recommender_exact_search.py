"""The compiled exact search against brute force on synthetic catalogs of several shapes
(dense blobs, independent marginals, a generic weighted d=18 space), plus diversity,
explanations and the speed layer's incremental cells."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from ranking_reference import brute_force, exact_order, synthetic_records, weighted_l1

from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.build import build_index, with_songs
from emergify_recommender.cells import build_cells, updated_cells
from emergify_recommender.columns import FeatureMatrix
from emergify_recommender.index import N_FEATURES, SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.nearest import search
from emergify_recommender.ranking import explain, nearest_under_rules, rank
from emergify_recommender.records import SongRecord


@pytest.fixture(scope="module")
def synthetic(rec: Any) -> SongIndex:
    records = synthetic_records(6000, seed=1)
    x = np.array([r.features for r in records])
    model = LoadedModel.from_portable(rec.fit_portable_model(x, k=20, version=1))
    return build_index(records, model, leaf=24)


def rows(ranked: list) -> list[int]:
    return [r.row for r in ranked]


CASES = [
    {},
    {"max_per_artist": 1},
    {"max_popularity": 30},
    {"max_popularity": 10, "max_per_artist": 3},
    {"max_per_artist": 10_000},
]


@pytest.mark.parametrize("rules", CASES)
def test_pruned_search_equals_brute_force_for_random_queries(
    synthetic: SongIndex, rules: dict[str, Any]
) -> None:
    assert synthetic.cells.n_cells > 200, "many small cells, so pruning really happens"
    rng = np.random.default_rng(len(str(rules)))
    for _ in range(25):
        n_seeds = int(rng.integers(1, 4))
        seeds = rng.choice(len(synthetic), size=n_seeds, replace=False).tolist()
        exclude = rng.choice(len(synthetic), size=5, replace=False).tolist()
        queries = synthetic.z[seeds]
        limit = int(rng.integers(1, 60))
        got = rank(synthetic, queries, None, limit, seeds=seeds, exclude=exclude, **rules)
        expected = brute_force(synthetic, queries, limit, seeds=seeds, exclude=exclude, **rules)
        assert rows(got) == rows(expected)
        assert [r.distance for r in got] == [r.distance for r in expected]
        assert [r.seed for r in got] == [r.seed for r in expected]


def test_feature_vector_queries_anywhere_in_space_are_exact(synthetic: SongIndex) -> None:
    rng = np.random.default_rng(9)
    for _ in range(30):
        # Far outside the data too: the bound must still prune correctly.
        query = rng.normal(0, 3, size=9)
        got = rank(synthetic, query, None, 30)
        assert rows(got) == rows(brute_force(synthetic, query, 30))


def test_brute_force_reference_matches_a_plain_python_oracle(synthetic: SongIndex) -> None:
    seed = 17
    query = synthetic.z[seed]
    records = synthetic.records
    scored = sorted(
        (sum(abs(a - b) for a, b in zip(synthetic.z[r], query, strict=True)), r)
        for r in range(len(synthetic))
    )
    plain = [r for _, r in scored if r != seed][:40]
    got = brute_force(synthetic, query, 40, max_per_artist=10_000, seeds=[seed])
    # Equal except where the duplicate rule drops a repeated title of the same artists.
    dropped = set(plain) - set(rows(got))
    keys = Counter((records[r].name, records[r].artists) for r in plain)
    seed_key = (records[seed].name, records[seed].artists)
    for r in dropped:
        key = (records[r].name, records[r].artists)
        assert keys[key] > 1 or key == seed_key


def test_new_and_replaced_songs_stay_exactly_searchable(synthetic: SongIndex) -> None:
    added = synthetic_records(800, seed=2, version=2, start=10_000)
    moved = [
        SongRecord(
            track_id=r.track_id,
            name=r.name,
            artists=r.artists,
            features=tuple(np.clip(np.array(r.features) * 0.5, 0, None).tolist()),
            table_version=2,
            popularity=r.popularity,
        )
        for r in (synthetic.records[i] for i in range(0, 6000, 50))
    ]
    index = with_songs(synthetic, [*added, *moved])
    assert len(index) == 6800
    assert index.cells.n_cells > synthetic.cells.n_cells, "new songs come as new cells"
    rng = np.random.default_rng(4)
    for _ in range(40):
        seed = int(rng.integers(len(index)))
        got = rank(index, index.z[seed], None, 30, seeds=[seed])
        assert rows(got) == rows(brute_force(index, index.z[seed], 30, seeds=[seed]))
    for r in moved[:5]:
        row = index.position(r.track_id)
        assert row is not None and index.records[row].features == r.features


def test_diversity_brings_more_artists_at_a_bounded_distance_cost(synthetic: SongIndex) -> None:
    rng = np.random.default_rng(3)
    gained = 0
    for _ in range(20):
        seed = int(rng.integers(len(synthetic)))
        query = synthetic.z[seed]
        plain = rank(synthetic, query, None, 20, max_per_artist=3, seeds=[seed])
        varied = rank(synthetic, query, None, 20, max_per_artist=3, seeds=[seed], diversity=1.0)
        pool = nearest_under_rules(synthetic, query, 20 * 3, max_per_artist=3, seeds=[seed])

        def artists(ranked: list) -> int:
            return len({a for r in ranked for a in synthetic.records[r.row].artists})

        assert artists(varied) >= artists(plain)
        gained += artists(varied) > artists(plain)
        assert set(rows(varied)) <= set(rows(pool)), "only songs of the over-fetched list"
        assert max(r.distance for r in varied) <= pool[-1].distance
        assert [r.distance for r in varied] == sorted(r.distance for r in varied)
        assert rank(synthetic, query, None, 20, max_per_artist=3, seeds=[seed], diversity=0.0) == (
            plain
        )
    assert gained >= 10, "diversity usually changes the playlist"
    with pytest.raises(ValueError, match="diversity"):
        rank(synthetic, synthetic.z[0], None, 5, diversity=1.5)


def test_explanations_name_the_nearest_and_furthest_features(synthetic: SongIndex) -> None:
    query = synthetic.z[5]
    for r in rank(synthetic, query, None, 10, seeds=[5]):
        why = explain(synthetic, r.row, query)
        gap = dict(zip(AUDIO_FEATURES, np.abs(synthetic.z[r.row] - query), strict=True))
        assert len(why.closest) == len(why.furthest) == 2
        assert max(gap[f] for f in why.closest) <= min(
            v for f, v in gap.items() if f not in why.closest
        )
        assert min(gap[f] for f in why.furthest) >= max(
            v for f, v in gap.items() if f not in why.furthest
        )


def test_index_columns_hold_no_per_song_python_objects(synthetic: SongIndex) -> None:
    # A record decodes on demand and round-trips the stored values.
    record = synthetic.records[123]
    assert synthetic.position(record.track_id) == 123
    assert synthetic.position("NoSuchTrack00000000000") is None
    assert synthetic.nbytes < len(synthetic) * 400, "a few hundred bytes per song at most"


def decimal_records(n: int, seed: int, version: int = 1, start: int = 0) -> list[SongRecord]:
    """Like :func:`synthetic_records`, with every feature a short decimal (as Spotify's are:
    0.529, -5.883 dB, 118.211 BPM), and albums shared by several songs."""
    out = []
    for r in synthetic_records(n, seed, version, start):
        x = np.array(r.features)
        x[2], x[8] = round(x[2], 3) + 0.0, round(x[8], 3)  # + 0.0: no -0.0 dB
        out.append(
            SongRecord(
                track_id=r.track_id,
                name=r.name,
                artists=r.artists,
                features=tuple(x.tolist()),
                table_version=r.table_version,
                album=None if hash(r.track_id) % 7 == 0 else f"Album {int(r.track_id[5:]) % 40}",
                popularity=r.popularity,
            )
        )
    return out


@pytest.fixture(scope="module")
def decimal(rec: Any) -> tuple[SongIndex, list[SongRecord]]:
    records = decimal_records(5000, seed=5)
    x = np.array([r.features for r in records])
    model = LoadedModel.from_portable(rec.fit_portable_model(x, k=12, version=1))
    return build_index(records, model, leaf=24), records


def test_short_decimal_features_are_packed_and_every_distance_stays_exact(
    decimal: tuple[SongIndex, list[SongRecord]],
) -> None:
    index, records = decimal
    features = index.cells.features
    assert features.packed, "short decimals are held as int32 codes"
    assert features.nbytes < len(index) * N_FEATURES * 8 * 0.6
    # Every stored feature reads back as the very float64 the record held.
    assert [index.features(i) for i in range(len(index))] == [r.features for r in records]
    # Distances equal a float64 recomputation from the records, not from the index.
    x = np.array([r.features for r in records])
    rng = np.random.default_rng(12)
    for _ in range(25):
        seed = int(rng.integers(len(index)))
        query = (x[seed] - index.means) / index.scales
        gaps = np.abs((x - index.means) / index.scales - query)
        plain = gaps[:, 0]
        for f in range(1, N_FEATURES):  # the terms added in feature order, as documented
            plain = plain + gaps[:, f]
        got = rank(index, query, None, 30, seeds=[seed], max_per_artist=1)
        assert rows(got) == rows(brute_force(index, query, 30, seeds=[seed], max_per_artist=1))
        assert [r.distance for r in got] == [float(plain[r.row]) for r in got]


def test_a_song_with_more_decimals_repacks_and_stays_exact(
    decimal: tuple[SongIndex, list[SongRecord]],
) -> None:
    index, records = decimal
    precise = replace(records[7], features=(0.1234567891234, *records[7].features[1:]))
    fine = replace(records[8], track_id="Fine0000000000000001", features=records[9].features)
    grown = with_songs(index, [precise, replace(fine, table_version=100_000)])
    assert not grown.cells.features.packed, "a value that is no short decimal: float64"
    assert grown.features(7) == precise.features
    assert grown.table_versions[-1] == 100_000 and grown.table_versions[0] == 1
    same = with_songs(index, [replace(records[3], features=records[4].features, album="New")])
    assert same.cells.features.packed, "values the codes can hold keep them packed"
    assert same.features(3) == records[4].features
    assert same.album(3) == "New" and same.album(4) == records[4].album
    assert [same.album(i) for i in range(10, 60)] == [r.album for r in records[10:60]]
    for ix in (grown, same):
        for seed in (3, 7, 1234):
            got = rank(ix, ix.z[seed], None, 25, seeds=[seed])
            assert rows(got) == rows(brute_force(ix, ix.z[seed], 25, seeds=[seed]))


@pytest.mark.parametrize(
    "values",
    [[0.5, -0.0, 1.0], [3e9, 1.0, 2.0], [0.1 + 0.2, 0.5, 0.25], [float("nan"), 0.1, 0.2]],
    ids=["negative zero", "int32 overflow", "not a short decimal", "nan"],
)
def test_features_that_would_not_round_trip_stay_float64(values: list[float]) -> None:
    raw = np.tile(np.array(values), (N_FEATURES, 1))
    packed = FeatureMatrix.pack(raw)
    assert not packed.packed
    assert np.array_equal(packed.decoded(), raw, equal_nan=True)
    assert np.signbit(packed.take(np.arange(3))).tolist() == np.signbit(raw).tolist()


def test_feature_codes_use_the_fewest_decimals_and_decode_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    raw = np.stack([np.round(rng.uniform(-10, 10, 500), p) + 0.0 for p in range(N_FEATURES)])
    packed = FeatureMatrix.pack(raw)
    assert packed.packed and packed.values.dtype == np.int32
    assert packed.divisors is not None
    assert packed.divisors.tolist() == [10.0**p for p in range(N_FEATURES)]
    assert packed.decoded().tobytes() == raw.tobytes()
    positions = rng.integers(0, 500, 40)
    assert packed.take(positions).tobytes() == raw[:, positions].tobytes()
    assert packed.take(int(positions[0])).tolist() == raw[:, positions[0]].tolist()


def test_repeated_ids_keep_the_newest_version_with_its_album() -> None:
    records = decimal_records(30, seed=8)
    newer = replace(records[4], table_version=2, album="Second Press", name="Renamed")
    index = build_index([*records, newer], None)
    assert len(index) == 30
    row = index.position(newer.track_id)
    assert row == 4
    assert (index.album(row), index.name(row), int(index.table_versions[row])) == (
        "Second Press",
        "Renamed",
        2,
    )
    assert [index.album(i) for i in range(30) if i != 4] == [
        r.album for i, r in enumerate(records) if i != 4
    ]


def test_sample_keys_are_a_stable_hash_of_the_id(
    decimal: tuple[SongIndex, list[SongRecord]],
) -> None:
    index, records = decimal
    small = build_index(records[100:200], None)
    keys = index.sample_keys
    assert keys.dtype == np.uint32
    assert small.sample_keys.tolist() == keys[100:200].tolist(), "same id, same key"
    assert np.unique(keys).size == keys.size
    assert keys.min() < 2**32 // 50 and keys.max() > 2**32 - 2**32 // 50, "spread evenly"


def independent_records(n: int, seed: int) -> list[SongRecord]:
    """A hard shape for partitions: every feature drawn on its own from a skewed
    distribution (no correlation, heavy tails, many songs far from any other), popularity
    mostly high so that a low cap filters most songs out."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.beta(2, 2, n),
            rng.beta(5, 2, n),
            -rng.gamma(2.0, 4.0, n),  # loudness, dB
            rng.beta(0.5, 6, n),
            rng.beta(0.3, 1.5, n),
            rng.beta(0.2, 3, n),
            rng.beta(1, 5, n),
            rng.beta(2, 2, n),
            rng.normal(120, 30, n).clip(0),  # tempo
        ]
    ).round(4)
    pop = np.where(rng.random(n) < 0.03, rng.integers(0, 5, n), rng.integers(20, 100, n))
    return [
        SongRecord(
            track_id=f"Indep{i:017d}",
            name=f"Song {i}",
            artists=(f"Artist {rng.integers(0, 400)}",),
            features=tuple(x[i].tolist()),
            table_version=1,
            popularity=int(pop[i]),
        )
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def independent(rec: Any) -> SongIndex:
    records = independent_records(5000, seed=21)
    x = np.array([r.features for r in records])
    model = LoadedModel.from_portable(rec.fit_portable_model(x, k=6, version=1))
    return build_index(records, model, leaf=16)


@pytest.mark.parametrize(
    "rules",
    [{}, {"max_per_artist": 1}, {"max_popularity": 4}, {"max_popularity": 0}],
    ids=["default", "one per artist", "cap keeps ~3%", "cap keeps <1%"],
)
def test_exact_on_independent_heavy_tailed_features(
    independent: SongIndex, rules: dict[str, Any]
) -> None:
    rng = np.random.default_rng(33)
    for _ in range(20):
        seeds = rng.choice(len(independent), size=int(rng.integers(1, 3)), replace=False)
        queries = independent.z[seeds]
        got = rank(independent, queries, None, 30, seeds=seeds.tolist(), **rules)
        expected = brute_force(independent, queries, 30, seeds=seeds.tolist(), **rules)
        assert rows(got) == rows(expected)
        assert [r.distance for r in got] == [r.distance for r in expected]
    if rules.get("max_popularity") == 0:
        passing = int((independent.popularity <= 0).sum())
        assert 0 < passing < len(independent) // 50, "the cap really filters most songs"


def test_kernel_is_exact_for_a_generic_weighted_space() -> None:
    """d = 18 (audio + artist profile), per-dimension weights, several queries, a popularity
    cap, replaced and appended songs: the kernel's top m equals the brute force's, bits
    included."""
    rng = np.random.default_rng(18)
    d, n = 18, 4000
    raw = np.column_stack(
        [rng.normal(0, 1, n).round(3) for _ in range(6)]
        + [rng.gamma(1.5, 2.0, n).round(5) for _ in range(6)]
        + [rng.uniform(-50, 50, n) for _ in range(6)]  # not short decimals: float64 path
    )
    means, scales = raw.mean(axis=0), raw.std(axis=0)
    weights = np.concatenate([np.ones(9), np.full(9, 0.37)])
    popularity = rng.integers(-1, 100, n)
    cells = build_cells(raw, (raw - means) / scales, popularity, leaf=20)
    for trial in range(40):
        queries = (raw[rng.choice(n, size=1 + trial % 3)] - means) / scales
        if trial % 4 == 0:
            queries = rng.normal(0, 2, size=queries.shape)  # anywhere in space
        cap = None if trial % 2 else int(rng.integers(0, 30))
        m = int(rng.integers(1, 80))
        _, got_rows, got_d, got_near = search(cells, means, scales, weights, queries, m, cap)
        d_all, near_all = weighted_l1((raw - means) / scales, queries, weights)
        ok = np.ones(n, dtype=bool) if cap is None else popularity <= cap
        order = [r for r in exact_order(d_all, n) if ok[r]][:m]
        assert got_rows.tolist() == order
        assert got_d.tolist() == d_all[order].tolist()
        assert got_near.tolist() == near_all[order].tolist()
    # Replaced songs (their boxes widen, popularity order may break) and appended ones.
    moved = rng.choice(n, 300, replace=False)
    new_raw = raw.copy()
    new_raw[moved] = raw[rng.choice(n, 300)] * 1.5
    new_pop = popularity.copy()
    new_pop[moved] = rng.integers(-1, 100, 300)
    extra = rng.normal(0, 3, size=(500, d)).round(2)
    grown = updated_cells(
        cells,
        moved,
        new_raw[moved],
        (new_raw[moved] - means) / scales,
        new_pop[moved],
        np.arange(n, n + 500),
        extra,
        (extra - means) / scales,
        rng.integers(-1, 100, 500),
    )
    all_raw = np.concatenate([new_raw, extra])
    all_pop = np.concatenate([new_pop, grown.popularity[grown.where[np.arange(n, n + 500)]]])
    for trial in range(20):
        queries = (all_raw[rng.choice(n + 500, size=1 + trial % 2)] - means) / scales
        cap = None if trial % 2 else 10
        _, got_rows, got_d, _ = search(grown, means, scales, weights, queries, 40, cap)
        d_all, _ = weighted_l1((all_raw - means) / scales, queries, weights)
        ok = np.ones(n + 500, dtype=bool) if cap is None else all_pop <= cap
        order = [r for r in exact_order(d_all, n + 500) if ok[r]][:40]
        assert got_rows.tolist() == order
        assert got_d.tolist() == d_all[order].tolist()


def test_songs_are_found_by_id_one_at_a_time_and_many_at_once(synthetic: SongIndex) -> None:
    added = [
        replace(r, track_id=f"New{i:019d}", table_version=r.table_version + 1)
        for i, r in enumerate(synthetic.records[:500])
    ]
    grown = with_songs(synthetic, added)
    for index in (synthetic, grown):
        # The binary search's sorter is intp: NumPy converts any other sorter type, the
        # whole array, on every search (a lookup cost O(n): 0.3 ms at 1M songs, and the
        # recommender's catalog changes spent most of their time there at 10M).
        assert index.id_order.dtype == np.intp
        known = [index.track_id(row) for row in (0, 1, len(index) // 2, len(index) - 1)]
        asked = [*known, "missing0000000000000000", "", "x" * 23, "é" * 5, known[0] + "x"]
        expected = [index.position(t) for t in asked]
        assert expected[:4] == [0, 1, len(index) // 2, len(index) - 1]
        assert expected[4:] == [None] * 5
        assert index.positions(asked).tolist() == [-1 if p is None else p for p in expected]
    assert grown.position(added[-1].track_id) == len(grown) - 1
