"""Catalog search: case-insensitive substring match on track and artist names."""

from __future__ import annotations

from emergify_recommender.index import SongIndex, normalize_text


def search(index: SongIndex, query: str, limit: int) -> tuple[list[int], int]:
    """Rows whose name or artists contain ``query`` (case-insensitive), and how many matched.

    Order: name matches before artist-only matches, earlier match position first, then by
    name and id, so the answer is stable. A linear scan: fine for catalogs up to a few
    hundred thousand songs; a trigram index is the next step beyond that.
    """
    needle = normalize_text(query)
    if not needle:
        return [], 0
    hits: list[tuple[int, int, str, str, int]] = []
    for row, text in enumerate(index.search_texts):
        at = text.find(needle)
        if at < 0:
            continue
        name_end = text.index("\n")
        in_name = 0 if at < name_end else 1
        name_at = at if in_name == 0 else at - name_end
        record = index.records[row]
        hits.append((in_name, name_at, text[:name_end], record.track_id, row))
    hits.sort()
    return [h[-1] for h in hits[:limit]], len(hits)
