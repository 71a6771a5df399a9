"""Ranking on the in-memory index: pure functions, checked against a brute-force oracle.

The oracle recomputes every distance in plain Python from the stored features and the
model's means and scales, sorts, and applies the playlist rules one song at a time.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from emergify_contracts.song import Song
from emergify_recommender.build import build_index, with_songs
from emergify_recommender.index import SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.ranking import query_vector, rank
from emergify_recommender.records import SongRecord
from emergify_recommender.text_keys import dedup_key, normalize_title


def oracle(
    index: SongIndex,
    query: np.ndarray,
    rows: list[int],
    limit: int,
    *,
    seeds: tuple[int, ...] = (),
    exclude: tuple[int, ...] = (),
    max_popularity: int | None = None,
    max_per_artist: int = 2,
) -> list[tuple[int, float]]:
    """The answer by brute force over ``rows``: (row, distance to the nearest query),
    ascending."""
    means, scales = index.means.tolist(), index.scales.tolist()

    queries = np.atleast_2d(query).tolist()

    def distance(row: int) -> float:
        features = index.records[row].features
        return min(
            sum(
                abs((f - m) / s - q)
                for f, m, s, q in zip(features, means, scales, one, strict=True)
            )
            for one in queries
        )

    scored = sorted((distance(r), r) for r in rows)
    taken = {dedup_key(index.records[s].name, index.records[s].artists) for s in seeds}
    per_artist: Counter[str] = Counter()
    out = []
    for d, row in scored:
        song = index.records[row]
        key = dedup_key(song.name, song.artists)
        artists = {a.casefold() for a in song.artists}
        if row in seeds or row in exclude or key in taken:
            continue
        if max_popularity is not None and (song.popularity or 0) > max_popularity:
            continue
        if any(per_artist[a] >= max_per_artist for a in artists):
            continue
        out.append((row, d))
        taken.add(key)
        per_artist.update(artists)
        if len(out) == limit:
            break
    return out


def members(index: SongIndex, cluster: int) -> list[int]:
    return [int(r) for r in np.flatnonzero(index.clusters == cluster)]


def largest_cluster(index: SongIndex) -> int:
    return int(np.bincount(index.clusters).argmax())


def extended(index: SongIndex, songs: list[Song]) -> SongIndex:
    """The index plus extra songs (one new micro-batch)."""
    return with_songs(index, [SongRecord.from_row(_row(s)) for s in songs])


def _row(song: Song) -> dict:
    row = song.model_dump()
    row["table_version"] = 2
    return row


def variant(song: Song, track_id: str, **changes: object) -> Song:
    """A copy of ``song`` under another id, with ``changes``."""
    return song.model_copy(update={"track_id": track_id, **changes})


def fake_id(n: int) -> str:
    return f"TestTrack{n:013d}"


@pytest.mark.parametrize(("max_popularity", "max_per_artist"), [(None, 50), (40, 2), (15, 1)])
def test_rank_is_the_brute_force_l1_order_of_the_whole_catalog(
    sample_index: SongIndex, max_popularity: int | None, max_per_artist: int
) -> None:
    cluster = largest_cluster(sample_index)
    seed = members(sample_index, cluster)[3]
    query = sample_index.z[seed]

    got = rank(
        sample_index,
        query,
        cluster,
        limit=30,
        max_popularity=max_popularity,
        max_per_artist=max_per_artist,
        seeds=[seed],
    )

    expected = oracle(
        sample_index,
        query,
        list(range(len(sample_index))),
        30,
        seeds=(seed,),
        max_popularity=max_popularity,
        max_per_artist=max_per_artist,
    )
    assert len(expected) == 30
    assert [r.row for r in got] == [row for row, _ in expected]
    assert [r.distance for r in got] == pytest.approx([d for _, d in expected], rel=1e-12)
    assert [r.cluster for r in got] == [sample_index.cluster_of_row(r.row) for r in got]


def test_the_seed_and_excluded_songs_are_never_returned(sample_index: SongIndex) -> None:
    cluster = largest_cluster(sample_index)
    seed = members(sample_index, cluster)[0]
    query = sample_index.z[seed]
    first = rank(sample_index, query, cluster, limit=20, seeds=[seed])
    excluded = [r.row for r in first[:5]]

    again = rank(sample_index, query, cluster, limit=20, seeds=[seed], exclude=excluded)

    rows = [r.row for r in again]
    assert seed not in rows
    assert not set(excluded) & set(rows)
    assert len(rows) == 20
    assert rows[:15] == [r.row for r in first[5:]]


def test_duplicates_of_the_seed_and_of_chosen_songs_are_dropped(
    sample_index: SongIndex, sample_songs: list[Song]
) -> None:
    cluster = largest_cluster(sample_index)
    seed_row = members(sample_index, cluster)[0]
    seed = sample_songs[seed_row]
    neighbour_row = rank(sample_index, sample_index.z[seed_row], cluster, 1, seeds=[seed_row])[
        0
    ].row
    neighbour = sample_songs[neighbour_row]
    index = extended(
        sample_index,
        [
            variant(seed, fake_id(1), name=f"{seed.name} - Remastered 2011"),
            variant(neighbour, fake_id(2), name=f"{neighbour.name.upper()} (Radio Edit)"),
            variant(neighbour, fake_id(3), name=f"  {neighbour.name}  [Mono Version] "),
        ],
    )

    got = rank(index, index.z[seed_row], cluster, limit=30, max_per_artist=50, seeds=[seed_row])

    ids = [index.records[r.row].track_id for r in got]
    assert fake_id(1) not in ids, "a remaster of the seed is the seed"
    same_as_neighbour = {neighbour.track_id, fake_id(2), fake_id(3)} & set(ids)
    assert len(same_as_neighbour) == 1, "one version of the neighbour, not three"
    keys = [dedup_key(index.records[r.row].name, index.records[r.row].artists) for r in got]
    assert len(keys) == len(set(keys))


def test_titles_are_normalized_for_duplicate_detection() -> None:
    assert normalize_title("Let It Be - Remastered 2009") == "let it be"
    assert normalize_title("LET IT BE (Radio Edit)") == "let it be"
    assert normalize_title("Let It Be [Mono Version] - Remastered") == "let it be"
    assert normalize_title("Let  It   Be") == "let it be"
    # Remixes, live and acoustic takes sound different: they stay separate songs.
    assert normalize_title("Let It Be - Remix") != "let it be"
    assert normalize_title("Let It Be (Live)") != "let it be"
    assert dedup_key("Song", ["B", "a"]) == dedup_key("song", ["A", "b"])


def test_max_popularity_keeps_songs_of_unknown_popularity(
    sample_index: SongIndex, sample_songs: list[Song]
) -> None:
    cluster = largest_cluster(sample_index)
    seed_row = members(sample_index, cluster)[0]
    seed = sample_songs[seed_row]
    unknown = variant(
        seed, fake_id(10), name="Nobody Knows Me", artists=["Unsigned Act"], popularity=None
    )
    index = extended(sample_index, [unknown])

    got = rank(index, index.z[seed_row], cluster, limit=30, max_popularity=10, seeds=[seed_row])

    assert len(got) == 30
    popularity = [index.records[r.row].popularity for r in got]
    assert all(p is None or p <= 10 for p in popularity)
    assert got[0].row == index.position(fake_id(10)), "unknown popularity passes the threshold"


def test_max_per_artist_counts_every_credited_artist(
    sample_index: SongIndex, sample_songs: list[Song]
) -> None:
    cluster = largest_cluster(sample_index)
    seed_row = members(sample_index, cluster)[0]
    seed = sample_songs[seed_row]
    prolific = [
        variant(
            seed,
            fake_id(20 + i),
            name=f"Prolific {i}",
            artists=["Prolific Act"],
            danceability=min(1.0, seed.danceability + 0.001 * i),
        )
        for i in range(4)
    ]
    featuring = variant(seed, fake_id(30), name="Feature", artists=["Guest", "PROLIFIC ACT"])
    index = extended(sample_index, [*prolific, featuring])

    got = rank(index, index.z[seed_row], cluster, limit=40, max_per_artist=2, seeds=[seed_row])

    credited = Counter(a.casefold() for r in got for a in index.records[r.row].artists)
    assert credited["prolific act"] == 2
    assert max(credited.values()) <= 2
    chosen = {index.records[r.row].track_id for r in got}
    assert {fake_id(20), fake_id(30)} <= chosen, "the two nearest of the act are kept"


def test_a_cluster_that_runs_out_still_gives_the_exact_global_answer(
    sample_index: SongIndex,
) -> None:
    cluster = largest_cluster(sample_index)
    own = members(sample_index, cluster)
    seed = own[0]
    query = sample_index.z[seed]
    # Leave only ten songs of the seed's cluster recommendable.
    kept = [
        row for row, _ in oracle(sample_index, query, own, 10, seeds=(seed,), max_per_artist=10_000)
    ]
    exclude = tuple(set(own) - set(kept) - {seed})

    got = rank(
        sample_index, query, cluster, limit=30, max_per_artist=10_000, seeds=[seed], exclude=exclude
    )

    expected = oracle(
        sample_index,
        query,
        list(range(len(sample_index))),
        30,
        seeds=(seed,),
        exclude=exclude,
        max_per_artist=10_000,
    )
    assert [r.row for r in got] == [row for row, _ in expected]
    assert {r.row for r in got if r.cluster == cluster} == set(kept)
    assert any(r.cluster != cluster for r in got), "other clusters fill the answer"


def test_limit_is_capped_by_what_the_catalog_can_supply(
    sample_songs: list[Song], sample_index: SongIndex
) -> None:
    small = build_index(
        [SongRecord.from_row(_row(s)) for s in sample_songs[:25]], sample_index.model
    )
    got = rank(small, small.z[0], small.cluster_of_row(0), limit=100, max_per_artist=50, seeds=[0])
    eligible = oracle(small, small.z[0], list(range(25)), 100, seeds=(0,), max_per_artist=50)
    assert len(got) == len(eligible) > 0
    assert [r.distance for r in got] == sorted(r.distance for r in got)


def test_several_seeds_rank_by_the_distance_to_the_nearest_seed(
    sample_index: SongIndex,
) -> None:
    seeds = [10, 200, 3000]
    queries = query_vector(sample_index, seeds)
    assert np.allclose(queries, sample_index.z[seeds])

    got = rank(sample_index, queries, None, limit=25, seeds=seeds)

    expected = oracle(sample_index, queries, list(range(len(sample_index))), 25, seeds=tuple(seeds))
    assert [r.row for r in got] == [row for row, _ in expected]
    assert [r.distance for r in got] == pytest.approx([d for _, d in expected], rel=1e-12)
    for r in got:
        own = np.abs(sample_index.z[r.row] - queries).sum(axis=1)
        assert r.seed == int(own.argmin()), "each item names its nearest seed"
    assert len({r.seed for r in got}) > 1, "every seed contributes its neighbourhood"


def test_before_any_model_the_whole_catalog_is_one_group(sample_songs: list[Song]) -> None:
    index = build_index([SongRecord.from_row(_row(s)) for s in sample_songs], None)
    assert index.model_version is None
    assert np.allclose(index.z.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(index.z.std(axis=0), 1)

    got = rank(index, index.z[5], None, limit=30, seeds=[5])

    expected = oracle(index, index.z[5], list(range(len(index))), 30, seeds=(5,))
    assert [r.row for r in got] == [row for row, _ in expected]
    assert {r.cluster for r in got} == {None}


def test_an_incremental_update_equals_a_full_rebuild(
    sample_songs: list[Song], sample_model
) -> None:
    model = LoadedModel.from_portable(sample_model)
    first, later = sample_songs[:4000], sample_songs[4000:]
    changed = [s.model_copy(update={"popularity": 99, "energy": 0.5}) for s in first[:50]]
    rows = [SongRecord.from_row(_row(s)) for s in [*changed, *later]]

    incremental = with_songs(
        build_index([SongRecord.from_row(_row(s)) for s in first], model), rows
    )
    full = build_index(
        [SongRecord.from_row(_row(s)) for s in [*changed, *first[50:], *later]], model
    )

    assert len(incremental) == len(full) == len(sample_songs)
    for row, track_id in enumerate(r.track_id for r in incremental.records):
        other = full.position(track_id)
        assert incremental.records[row] == full.records[other]
        assert np.array_equal(incremental.z[row], full.z[other])
        assert incremental.clusters[row] == full.clusters[other]
        assert incremental.popularity[row] == full.popularity[other]
    assert sorted(np.bincount(incremental.clusters)) == sorted(np.bincount(full.clusters))
    assert not incremental.z.flags.writeable, "an index never changes once built"
