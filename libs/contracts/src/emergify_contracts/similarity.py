"""The product's similarity: audio L1 plus a weight times artist-profile L1, and why two
songs are close (docs/similarity.md).

Both parts are L1 distances on standardized features, so the blend is one L1 over the
concatenated 18-dim vector ``[z, w * a]`` (``w >= 0``): any exact L1 search (bounding boxes,
cells, brute force) stays exact on it.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from emergify_contracts.song import AUDIO_FEATURES

N_AUDIO = len(AUDIO_FEATURES)
OWN_SOUND = "own sound"
ARTIST_SOUND = "artist's sound"
SHARED_GENRES = "shared genres"


def blended_vectors(z: np.ndarray, artist_vectors: np.ndarray, artist_weight: float) -> np.ndarray:
    """``[z, w * a]`` (n x 18): the L1 distance between two rows is the blended distance."""
    if artist_weight < 0:
        raise ValueError(f"artist_weight {artist_weight:g} must be >= 0")
    z = np.asarray(z, dtype=np.float64)
    a = np.asarray(artist_vectors, dtype=np.float64)
    if z.shape != a.shape or z.ndim != 2 or z.shape[1] != N_AUDIO:
        raise ValueError(f"z and artist vectors must both be n x {N_AUDIO}")
    return np.hstack([z, artist_weight * a])


def blended_distance(
    z_a: np.ndarray, artist_a: np.ndarray, z_b: np.ndarray, artist_b: np.ndarray, weight: float
) -> float:
    """Audio L1 + ``weight`` x artist-profile L1 between two songs."""
    audio = float(np.abs(np.asarray(z_a) - np.asarray(z_b)).sum())
    artist = float(np.abs(np.asarray(artist_a) - np.asarray(artist_b)).sum())
    return audio + weight * artist


@dataclass(frozen=True, slots=True)
class Closeness:
    """Why a song is close to its seed.

    ``audio_share`` and ``artist_share`` split the blended distance between the parts;
    ``reasons`` lists what made the song close, strongest first: the part whose distance
    is smaller relative to its typical size in the catalog; ``shared genres`` comes last
    when any are shared (genres are not part of the distance).
    """

    distance: float
    audio_distance: float
    artist_distance: float
    audio_share: float
    artist_share: float
    shared_genres: tuple[str, ...]
    reasons: tuple[str, ...]


def explain_closeness(
    seed_z: np.ndarray,
    seed_artist: np.ndarray,
    song_z: np.ndarray,
    song_artist: np.ndarray,
    artist_weight: float,
    seed_genres: Collection[str] = (),
    song_genres: Collection[str] = (),
    typical: tuple[float, float] = (1.0, 1.0),
) -> Closeness:
    """Name which part made ``song`` close to ``seed``: its own sound (audio L1), its
    artist's sound (profile L1), then shared genres (:func:`shared_genres`) when there are
    any. Genres are named, never measured: they are no part of ``distance``.

    ``typical`` is the typical (audio, artist) L1 between two songs of the catalog
    (:func:`typical_distances`): a part counts as closer when its distance is a smaller
    fraction of its typical size, since profiles, being means, are closer than songs.
    """
    audio = float(np.abs(np.asarray(seed_z) - np.asarray(song_z)).sum())
    artist = float(np.abs(np.asarray(seed_artist) - np.asarray(song_artist)).sum())
    total = audio + artist_weight * artist
    if total > 0:
        audio_share, artist_share = audio / total, artist_weight * artist / total
    else:  # identical songs: both parts agree fully; split by their weights
        audio_share, artist_share = 1 / (1 + artist_weight), artist_weight / (1 + artist_weight)
    shared = shared_genres(seed_genres, song_genres)
    typical_audio, typical_artist = (max(t, 1e-12) for t in typical)
    if artist_weight > 0 and artist / typical_artist < audio / typical_audio:
        reasons = [ARTIST_SOUND, OWN_SOUND]
    else:
        reasons = [OWN_SOUND, ARTIST_SOUND] if artist_weight > 0 else [OWN_SOUND]
    if shared:
        reasons.append(SHARED_GENRES)
    return Closeness(total, audio, artist, audio_share, artist_share, shared, tuple(reasons))


def shared_genres(seed_genres: Collection[str], song_genres: Collection[str]) -> tuple[str, ...]:
    """The song's genres that the seed has too, in the song's order and spelling; compared
    case-insensitively, surrounding spaces ignored, each genre once."""
    theirs = {g.strip().casefold() for g in seed_genres if g and g.strip()}
    shared: dict[str, str] = {}
    for genre in song_genres:
        key = genre.strip().casefold() if genre else ""
        if key in theirs:
            shared.setdefault(key, genre.strip())
    return tuple(shared.values())


def typical_distances(
    z: np.ndarray, artist_vectors: np.ndarray, pairs: int = 20_000, seed: int = 7
) -> tuple[float, float]:
    """Median audio L1 and median artist-profile L1 between random pairs of songs."""
    n = len(z)
    if n < 2:
        return 1.0, 1.0
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, size=pairs)
    j = rng.integers(0, n, size=pairs)
    keep = i != j
    i, j = i[keep], j[keep]
    audio = np.abs(z[i] - z[j]).sum(axis=1)
    artist = np.abs(artist_vectors[i] - artist_vectors[j]).sum(axis=1)
    return float(np.median(audio)) or 1.0, float(np.median(artist)) or 1.0
