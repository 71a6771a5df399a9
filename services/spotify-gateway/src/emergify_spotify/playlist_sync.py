"""Bring a Spotify playlist to a desired list of songs: read, remove the extra, add the missing.

A diff against what Spotify holds is idempotent: run twice, or again after a crash half-way,
it adds and removes only what is still different, so nothing is ever added twice. Every call
goes through :class:`~emergify_spotify.spotify_api.SpotifyApi`, which waits out 429s.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from emergify_spotify.playlist import MAX_URIS_PER_REQUEST, chunks
from emergify_spotify.spotify_api import SpotifyApi


@dataclass(frozen=True)
class SyncResult:
    """What one sync changed on Spotify."""

    added: tuple[str, ...]
    removed: tuple[str, ...]


def playlist_track_ids(api: SpotifyApi, playlist_id: str) -> list[str]:
    """Every track id of a Spotify playlist, in order (local files and episodes skipped)."""
    ids: list[str] = []
    offset = 0
    while True:
        page = api.call(
            lambda sp, offset=offset: sp.playlist_items(
                playlist_id, limit=MAX_URIS_PER_REQUEST, offset=offset
            ),
            "read the playlist's songs",
        )
        for entry in page["items"]:
            item = entry.get("item") or entry.get("track") or {}
            if item.get("type", "track") == "track" and item.get("id"):
                ids.append(item["id"])
        offset += len(page["items"])
        if not page.get("next") or not page["items"]:
            return ids


def sync_playlist(api: SpotifyApi, playlist_id: str, desired: list[str]) -> SyncResult:
    """Make the Spotify playlist hold exactly ``desired`` (each once)."""
    current = playlist_track_ids(api, playlist_id)
    counts = Counter(current)
    wanted = set(desired)
    # A duplicate goes too (removal takes every occurrence) and comes back once below.
    remove = sorted(t for t, n in counts.items() if t not in wanted or n > 1)
    for batch in chunks(remove, MAX_URIS_PER_REQUEST):
        api.call(
            lambda sp, batch=batch: sp.playlist_remove_all_occurrences_of_items(playlist_id, batch),
            "remove songs from the playlist",
        )
    kept = {t for t, n in counts.items() if t in wanted and n == 1}
    add = [t for t in dict.fromkeys(desired) if t not in kept]
    for batch in chunks(add, MAX_URIS_PER_REQUEST):
        api.call(
            lambda sp, batch=batch: sp.playlist_add_items(playlist_id, batch),
            "add songs to the playlist",
        )
    return SyncResult(added=tuple(add), removed=tuple(remove))
