"""Artist sound profiles: the one definition the batch layer, the speed layer, the recommender
and the offline evaluation share (docs/similarity.md).

An artist's profile is the mean of the *standardized* audio features (the model's scaler) of
every song that credits the artist; every credited artist of a song counts. Profiles are
kept as running sums and counts so that a new or changed song updates them exactly
(:func:`apply_song_changes`), and a batch recompute gives the same numbers.

A song's *artist vector* is the equal-weight mean of its artists' profiles
(:data:`MULTI_ARTIST_RULES`; "mean" is the product's rule, chosen by the evaluation).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.song_keys import normalize_text

#: Column names of a profile (and of a song's artist vector), in vector order.
PROFILE_FEATURES: tuple[str, ...] = AUDIO_FEATURES
MultiArtistRule = Literal["mean", "weighted", "first"]
#: "mean": each credited artist weighs the same; "weighted": by the artist's song count
#: (the mean over the union of their songs); "first": the first credited artist only.
MULTI_ARTIST_RULES: tuple[MultiArtistRule, ...] = ("mean", "weighted", "first")
DEFAULT_MULTI_ARTIST_RULE: MultiArtistRule = "mean"

_NAME_PREFIX = "name:"


@lru_cache(maxsize=1 << 16)  # a catalog names the same artists over and over
def normalize_artist_name(name: str) -> str:
    """Case- and width-insensitive artist name: NFKC, casefolded, single spaces."""
    return normalize_text(name)


def artist_keys(artists: Sequence[str], artist_ids: Sequence[str] = ()) -> tuple[str, ...]:
    """The keys that identify a song's credited artists, unique, in credit order.

    Spotify artist ids when the song has them (two artists may share a name), else the
    normalized names prefixed ``name:`` (so a name can never collide with an id).
    """
    ids = [a.strip() for a in artist_ids if a and a.strip()]
    if ids:
        return tuple(dict.fromkeys(ids))
    names = (normalize_artist_name(a) for a in artists if a and a.strip())
    return tuple(dict.fromkeys(_NAME_PREFIX + n for n in names if n))


def artist_credits(
    artists: Sequence[str], artist_ids: Sequence[str] = ()
) -> tuple[tuple[str, str], ...]:
    """Each key of :func:`artist_keys` with a display name: the credited name at the same
    position when names and ids line up one to one, else the first credited name."""
    keys = artist_keys(artists, artist_ids)
    names = [a.strip() for a in artists if a and a.strip()]
    ids = [a.strip() for a in artist_ids if a and a.strip()]
    if not ids:
        # Name keys: the first spelling of each normalized name.
        first: dict[str, str] = {}
        for n in names:
            first.setdefault(_NAME_PREFIX + normalize_artist_name(n), n)
        return tuple((k, first.get(k, "")) for k in keys)
    by_id: dict[str, str] = {}
    if len(ids) == len(names):
        for i, n in zip(ids, names, strict=True):
            by_id.setdefault(i, n)
    fallback = names[0] if names else ""
    return tuple((k, by_id.get(k, fallback)) for k in keys)


@dataclass(frozen=True)
class ArtistProfiles:
    """Running sums of standardized features and song counts, one row per artist key."""

    keys: tuple[str, ...]
    sums: np.ndarray  # artists x 9, float64
    counts: np.ndarray  # artists, int64

    def __post_init__(self) -> None:
        if self.sums.shape != (len(self.keys), len(PROFILE_FEATURES)):
            raise ValueError(f"sums must be {len(self.keys)} x {len(PROFILE_FEATURES)}")
        if self.counts.shape != (len(self.keys),):
            raise ValueError(f"counts must have {len(self.keys)} entries")

    @property
    def means(self) -> np.ndarray:
        """The profiles: mean standardized features per artist (artists x 9)."""
        counts = np.maximum(self.counts, 1)[:, None]
        return self.sums / counts

    def position(self) -> dict[str, int]:
        """Artist key -> row."""
        return {k: i for i, k in enumerate(self.keys)}

    def profile(self, key: str) -> np.ndarray | None:
        """One artist's profile, or None for an unknown artist (or one with no songs left)."""
        row = self.position().get(key)
        if row is None or self.counts[row] <= 0:
            return None
        return self.means[row]


def artist_profiles(z: np.ndarray, song_artists: Sequence[Sequence[str]]) -> ArtistProfiles:
    """Every artist's profile from standardized features ``z`` (n x 9) and each song's
    artist keys (from :func:`artist_keys`)."""
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] != len(PROFILE_FEATURES) or z.shape[0] != len(song_artists):
        raise ValueError(f"z must be {len(song_artists)} x {len(PROFILE_FEATURES)}")
    position: dict[str, int] = {}
    song_rows: list[int] = []
    artist_rows: list[int] = []
    for i, keys in enumerate(song_artists):
        for key in dict.fromkeys(keys):
            song_rows.append(i)
            artist_rows.append(position.setdefault(key, len(position)))
    sums = np.zeros((len(position), z.shape[1]))
    np.add.at(sums, np.asarray(artist_rows, dtype=np.int64), z[np.asarray(song_rows, np.int64)])
    counts = np.bincount(np.asarray(artist_rows, dtype=np.int64), minlength=len(position))
    return ArtistProfiles(tuple(position), sums, counts.astype(np.int64))


@dataclass(frozen=True)
class SongChange:
    """One song's features and artists before and after an upsert (None: absent)."""

    before: tuple[np.ndarray, Sequence[str]] | None
    after: tuple[np.ndarray, Sequence[str]] | None


def apply_song_changes(profiles: ArtistProfiles, changes: Iterable[SongChange]) -> ArtistProfiles:
    """The profiles after songs were added, changed or removed: subtract each song's old
    version from its old artists, add the new one to its new artists (new artists get a
    row). The speed layer's incremental rule; equal to a full recompute up to rounding."""
    keys = list(profiles.keys)
    position = profiles.position()
    rows: list[int] = []  # one entry per (song version, artist): the row it moves,
    signs: list[int] = []  # subtracted (-1) or added (+1),
    vectors: list[np.ndarray] = []  # and the version's standardized features
    for change in changes:
        for version, sign in ((change.before, -1), (change.after, 1)):
            if version is None:
                continue
            z, artists = version
            for key in dict.fromkeys(artists):
                if key not in position:
                    position[key] = len(keys)
                    keys.append(key)
                rows.append(position[key])
                signs.append(sign)
                vectors.append(np.asarray(z, dtype=np.float64))
    width = len(PROFILE_FEATURES)
    sums = np.zeros((len(keys), width), dtype=np.float64)
    sums[: len(profiles.keys)] = profiles.sums
    counts = np.zeros(len(keys), dtype=np.int64)
    counts[: len(profiles.keys)] = profiles.counts
    if rows:
        at = np.asarray(rows, dtype=np.int64)
        sign = np.asarray(signs, dtype=np.int64)
        # np.add.at adds in sequence, so each sum sees the same additions in the same order
        # as one song at a time would.
        np.add.at(sums, at, np.stack(vectors) * sign[:, None])
        np.add.at(counts, at, sign)
    if (counts < 0).any():
        raise ValueError("a change removed a song that was not counted in its artist's profile")
    return ArtistProfiles(tuple(keys), sums, counts)


def song_artist_vectors(
    profiles: ArtistProfiles,
    song_artists: Sequence[Sequence[str]],
    rule: MultiArtistRule = DEFAULT_MULTI_ARTIST_RULE,
    fallback: np.ndarray | None = None,
) -> np.ndarray:
    """Each song's artist vector (n x 9) under ``rule``.

    A song none of whose artists has a profile gets its row of ``fallback`` (the song's own
    standardized features: an artist known by one song sounds like that song), else zeros.
    """
    if rule not in MULTI_ARTIST_RULES:
        raise ValueError(f"multi-artist rule {rule!r} is not one of {MULTI_ARTIST_RULES}")
    position = profiles.position()
    means, counts = profiles.means, profiles.counts
    out = np.zeros((len(song_artists), len(PROFILE_FEATURES)))
    for i, keys in enumerate(song_artists):
        rows = [position[k] for k in dict.fromkeys(keys) if k in position]
        rows = [r for r in rows if counts[r] > 0]
        if not rows:
            if fallback is not None:
                out[i] = fallback[i]
            continue
        if rule == "first":
            out[i] = means[rows[0]]
        elif rule == "mean":
            out[i] = means[rows].mean(axis=0)
        else:
            w = counts[rows].astype(np.float64)
            out[i] = (means[rows] * w[:, None]).sum(axis=0) / w.sum()
    return out
