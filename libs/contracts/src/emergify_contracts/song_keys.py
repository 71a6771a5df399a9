"""Normalized names of a song: one rule for the recommender (search, the no-duplicates rule,
artist keys) and the offline evaluation, so both call the same songs the same."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable

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
