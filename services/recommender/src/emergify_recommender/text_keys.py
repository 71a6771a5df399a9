"""Text keys of a song: normalized names for search, the duplicate key, id hashes."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

import numpy as np

#: A version suffix that does not make a different recording: "Song - Remastered 2011",
#: "Song (Radio Edit)", "Song [Mono Version]". Remixes, live and acoustic takes sound
#: different, so they are *not* in the list and stay separate songs.
_VERSION_WORDS = r"(?:remaster(?:ed)?|version|edit|mono|stereo|explicit|clean)"
_VERSION_SUFFIX = re.compile(
    rf"\s*(?:\s-\s[^-]*\b{_VERSION_WORDS}\b[^-]*"
    rf"|\([^()]*\b{_VERSION_WORDS}\b[^()]*\)"
    rf"|\[[^\[\]]*\b{_VERSION_WORDS}\b[^\[\]]*\])\s*$",
    re.IGNORECASE,
)


def normalize_text(text: str) -> str:
    """Case- and width-insensitive form of a name: NFKC, casefolded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalize_title(name: str) -> str:
    """The title without version suffixes ("- Remastered 2011", "(Radio Edit)"), normalized."""
    title = unicodedata.normalize("NFKC", name).strip()
    while title[-1:] in (")", "]") or " - " in title:  # cheap test first: most titles are plain
        shorter = _VERSION_SUFFIX.sub("", title)
        if shorter == title or not shorter.strip():
            break
        title = shorter
    return normalize_text(title)


def dedup_key(name: str, artists: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Two songs with the same key are the same recording for playlist purposes."""
    return normalize_title(name), tuple(sorted(normalize_text(a) for a in artists))


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
