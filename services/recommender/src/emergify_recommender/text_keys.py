"""Text keys of a song: normalized names for search, the duplicate key, id hashes."""

from __future__ import annotations

import numpy as np

# The name rules are the contracts' (the offline evaluation uses them too); imported here so
# the recommender has one module for every key of a song.
from emergify_contracts.song_keys import dedup_key, normalize_text, normalize_title

__all__ = ["dedup_key", "id_hashes", "normalize_text", "normalize_title"]


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """A stable, well-mixed uint32 hash of each fixed-width track id (``S22``), vectorized."""
    padded = np.zeros((ids.size, 24), dtype=np.uint8)
    padded[:, : ids.itemsize] = ids.view(np.uint8).reshape(ids.size, ids.itemsize)
    words = padded.view("<u8")  # n x 3, the same on every platform
    h = (words * _MIX).sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64, as intended
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(32)).astype(np.uint32)
