"""Catalog search: case-insensitive substring match on track and artist names."""

from __future__ import annotations

import numpy as np

from emergify_recommender.index import SongIndex
from emergify_recommender.text_keys import normalize_text


def search(index: SongIndex, query: str, limit: int) -> tuple[list[int], int]:
    """Rows whose name or artists contain ``query`` (case-insensitive), and how many matched.

    Order: name matches before artist-only matches, earlier match position (in UTF-8 bytes)
    first, then by name and id, so the answer is stable. The normalized texts are one UTF-8
    buffer, scanned with ``bytes.find`` (C speed): a miss costs nothing per song, each hit a
    little Python.
    """
    needle = normalize_text(query).encode()
    if not needle:
        return [], 0
    column = index.search_text
    buffer, offsets = column.buffer, column.offsets
    hits: list[tuple[int, int]] = []  # (row, byte position within the row)
    at = buffer.find(needle)
    while at >= 0:
        row = int(np.searchsorted(offsets, at, side="right")) - 1
        end = int(offsets[row + 1])
        if at + len(needle) <= end:  # a match never spans two songs
            hits.append((row, at - int(offsets[row])))
        at = buffer.find(needle, end)  # the first match of a row is the one that counts
    keyed = []
    for row, at in hits:
        text = column.raw(row)
        name_end = text.index(b"\n")
        in_name = 0 if at < name_end else 1
        name_at = at if in_name == 0 else at - name_end
        keyed.append((in_name, name_at, text[:name_end], index.ids[row], row))
    keyed.sort()
    return [k[-1] for k in keyed[:limit]], len(keyed)
