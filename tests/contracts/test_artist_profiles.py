"""Artist sound profiles and the blended distance: the one definition every layer shares."""

from __future__ import annotations

import numpy as np
import pytest

from emergify_contracts.artist_profiles import (
    SongChange,
    apply_song_changes,
    artist_keys,
    artist_profiles,
    song_artist_vectors,
)
from emergify_contracts.settings import EmergifySettings
from emergify_contracts.similarity import (
    ARTIST_SOUND,
    OWN_SOUND,
    SHARED_GENRES,
    blended_distance,
    blended_vectors,
    explain_closeness,
    typical_distances,
)

ID_A = "0" * 21 + "A"
ID_B = "0" * 21 + "B"


def test_artist_keys_prefer_ids_and_normalize_names() -> None:
    assert artist_keys(["Lady Gaga", "Bruno Mars"], [ID_A, ID_B]) == (ID_A, ID_B)
    assert artist_keys(["Lady  GAGA", "lady gaga", "Ｂruno Mars"]) == (
        "name:lady gaga",
        "name:bruno mars",
    )
    assert artist_keys(["", " "]) == ()


def test_profile_is_the_mean_over_every_song_crediting_the_artist() -> None:
    rng = np.random.default_rng(1)
    z = rng.normal(size=(5, 9))
    songs = [("a",), ("a", "b"), ("b",), ("c",), ("a", "a")]  # "a" twice on one song counts once
    p = artist_profiles(z, songs)
    means = dict(zip(p.keys, p.means, strict=True))
    counts = dict(zip(p.keys, p.counts.tolist(), strict=True))
    assert counts == {"a": 3, "b": 2, "c": 1}
    np.testing.assert_allclose(means["a"], z[[0, 1, 4]].mean(axis=0))
    np.testing.assert_allclose(means["b"], z[[1, 2]].mean(axis=0))
    np.testing.assert_allclose(means["c"], z[3])
    assert p.profile("nobody") is None


def test_incremental_updates_equal_a_full_recompute() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(size=(6, 9))
    songs = [("a",), ("a", "b"), ("b",), ("c",), ("a",), ("d", "a")]
    start = artist_profiles(z[:4], songs[:4])
    changed_z = rng.normal(size=9)
    updated = apply_song_changes(
        start,
        [
            SongChange(None, (z[4], songs[4])),  # new song, known artist
            SongChange(None, (z[5], songs[5])),  # new song, new artist "d"
            SongChange((z[2], songs[2]), (changed_z, ("c",))),  # song 2 changed artist + sound
            SongChange((z[3], songs[3]), None),  # song 3 removed
        ],
    )
    final_z = np.vstack([z[0], z[1], changed_z, z[4], z[5]])
    final_songs = [songs[0], songs[1], ("c",), songs[4], songs[5]]
    full = artist_profiles(final_z, final_songs)
    got = {k: (updated.counts[i], updated.means[i]) for i, k in enumerate(updated.keys)}
    for i, key in enumerate(full.keys):
        assert got[key][0] == full.counts[i]
        np.testing.assert_allclose(got[key][1], full.means[i], atol=1e-12)
    assert "d" in updated.keys


def test_removing_an_uncounted_song_is_refused() -> None:
    p = artist_profiles(np.zeros((1, 9)), [("a",)])
    with pytest.raises(ValueError, match="not counted"):
        apply_song_changes(p, [SongChange((np.zeros(9), ("zz",)), None)])


def test_multi_artist_rules() -> None:
    z = np.zeros((4, 9))
    z[0, 0], z[1, 0], z[2, 0], z[3, 0] = 1.0, 3.0, 10.0, 5.0
    songs = [("a",), ("a",), ("b",), ("a", "b")]
    p = artist_profiles(z, songs)
    # a: songs 0, 1, 3 -> mean 3; b: songs 2, 3 -> mean 7.5
    by_rule = {
        rule: song_artist_vectors(p, songs, rule)[3, 0] for rule in ("mean", "weighted", "first")
    }
    assert by_rule["first"] == pytest.approx(3.0)
    assert by_rule["mean"] == pytest.approx((3.0 + 7.5) / 2)
    assert by_rule["weighted"] == pytest.approx((3 * 3.0 + 2 * 7.5) / 5)
    with pytest.raises(ValueError, match="multi-artist rule"):
        song_artist_vectors(p, songs, "median")  # type: ignore[arg-type]


def test_a_song_without_known_artists_falls_back_to_its_own_sound() -> None:
    z = np.arange(18, dtype=float).reshape(2, 9)
    p = artist_profiles(z[:1], [("a",)])
    a = song_artist_vectors(p, [("a",), ("new",)], fallback=z)
    np.testing.assert_allclose(a[1], z[1])
    assert not song_artist_vectors(p, [("new",)]).any()


def test_blended_l1_over_concatenated_vectors_is_audio_plus_weighted_artist_l1() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 9))
    songs = [(f"artist{i % 40}", f"artist{(i * 7) % 40}") for i in range(300)]
    a = song_artist_vectors(artist_profiles(z, songs), songs)
    w = 1.7
    x = blended_vectors(z, a, w)
    assert x.shape == (300, 18)
    for seed in (0, 17, 299):
        l1 = np.abs(x - x[seed]).sum(axis=1)
        parts = np.abs(z - z[seed]).sum(axis=1) + w * np.abs(a - a[seed]).sum(axis=1)
        np.testing.assert_allclose(l1, parts, rtol=1e-12)
        assert blended_distance(z[seed], a[seed], z[5], a[5], w) == pytest.approx(l1[5])
        # so an exact L1 top-k on the 18-dim rows is the exact top-k of the blended distance
        assert np.argsort(l1, kind="stable")[:10].tolist() == (
            np.argsort(parts, kind="stable")[:10].tolist()
        )
    with pytest.raises(ValueError, match=">= 0"):
        blended_vectors(z, a, -1.0)


def test_explanation_names_the_part_that_made_the_song_close() -> None:
    seed_z, seed_a = np.zeros(9), np.zeros(9)
    far_sound_same_artist = explain_closeness(seed_z, seed_a, np.full(9, 0.5), seed_a, 2.0)
    assert far_sound_same_artist.reasons[0] == ARTIST_SOUND
    assert far_sound_same_artist.artist_share == 0.0 and far_sound_same_artist.audio_share == 1.0

    same_sound_other_artist = explain_closeness(seed_z, seed_a, seed_z, np.full(9, 0.5), 2.0)
    assert same_sound_other_artist.reasons[0] == OWN_SOUND
    assert same_sound_other_artist.distance == pytest.approx(9.0)

    both = explain_closeness(
        seed_z,
        seed_a,
        np.full(9, 0.2),
        np.full(9, 0.1),
        1.0,
        seed_genres=["Indie Pop", "lo-fi", " rock "],
        song_genres=["rock", "jazz", "indie pop", "Rock"],
        typical=(9.0, 1.8),
    )
    # audio 1.8 of a typical 9 (0.2) beats artist 0.9 of a typical 1.8 (0.5); genres come
    # last, in the song's order and spelling, each once
    assert both.reasons == (OWN_SOUND, ARTIST_SOUND, SHARED_GENRES)
    assert both.shared_genres == ("rock", "indie pop")
    # genres are named, not measured
    assert (
        both.distance
        == explain_closeness(
            seed_z, seed_a, np.full(9, 0.2), np.full(9, 0.1), 1.0, typical=(9.0, 1.8)
        ).distance
    )
    assert explain_closeness(
        seed_z, seed_a, seed_z, seed_a, 0.0, seed_genres=["pop"], song_genres=["pop"]
    ).reasons == (OWN_SOUND, SHARED_GENRES)
    assert (
        explain_closeness(
            seed_z, seed_a, seed_z, seed_a, 0.0, seed_genres=["pop"], song_genres=["rock"]
        ).shared_genres
        == ()
    )
    assert both.audio_share + both.artist_share == pytest.approx(1.0)

    audio_only = explain_closeness(seed_z, seed_a, np.ones(9), seed_a, 0.0)
    assert audio_only.reasons == (OWN_SOUND,)


def test_typical_distances_are_median_pair_distances() -> None:
    z = np.vstack([np.zeros(9), np.ones(9)])
    audio, artist = typical_distances(z, z * 2, pairs=200)
    assert (audio, artist) == (9.0, 18.0)


def test_one_setting_holds_the_emerging_threshold_and_the_similarity(monkeypatch) -> None:
    monkeypatch.setenv("EMERGIFY_EMERGING_MAX_POPULARITY", "12")
    monkeypatch.setenv("EMERGIFY_SIMILARITY_ARTIST_WEIGHT", "0.5")
    s = EmergifySettings(_env_file=None)
    assert (s.emerging_max_popularity, s.similarity_artist_weight) == (12, 0.5)
    monkeypatch.setenv("EMERGIFY_EMERGING_MAX_POPULARITY", "101")
    with pytest.raises(ValueError, match="emerging_max_popularity"):
        EmergifySettings(_env_file=None)
