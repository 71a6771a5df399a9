"""Spotify's wire formats: error bodies and the JSON objects (user, artist, track, paging,
playlist) the Web API answers with, as of the February 2026 development-mode changes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import JSONResponse

from emergify_spotify.sandbox.listeners import Listener, Track
from emergify_spotify.sandbox.state import Playlist, SandboxState


def api_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """A Web API error: ``{"error": {"status": ..., "message": ...}}``."""
    return JSONResponse(
        {"error": {"status": status, "message": message}}, status_code=status, headers=headers
    )


def oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    """An accounts-service error: ``{"error": ..., "error_description": ...}``."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message


class SpotifyObjects:
    """Builds Spotify's JSON objects from the state, for one base URL."""

    def __init__(self, state: SandboxState, base_url: str) -> None:
        self.state = state
        self.base = base_url.rstrip("/")

    def user(self, listener: Listener) -> dict[str, Any]:
        # No email, country, product, followers: removed for development-mode apps (Feb 2026).
        return {
            "id": listener.id,
            "display_name": listener.display_name,
            "type": "user",
            "uri": f"spotify:user:{listener.id}",
            "href": f"{self.base}/v1/users/{listener.id}",
            "external_urls": {"spotify": f"https://open.spotify.com/user/{listener.id}"},
            "images": [
                {
                    "url": f"https://i.scdn.co/image/sandbox-user-{listener.id}",
                    "height": 300,
                    "width": 300,
                }
            ],
        }

    def artist(self, raw: dict[str, Any]) -> dict[str, Any]:
        # No popularity or followers (removed Feb 2026); genres remain.
        return {
            "id": raw["id"],
            "name": raw["name"],
            "type": "artist",
            "uri": f"spotify:artist:{raw['id']}",
            "href": f"{self.base}/v1/artists/{raw['id']}",
            "external_urls": {"spotify": f"https://open.spotify.com/artist/{raw['id']}"},
            "genres": raw["genres"],
            "images": [
                {
                    "url": f"https://i.scdn.co/image/sandbox-artist-{raw['id']}",
                    "height": 640,
                    "width": 640,
                }
            ],
        }

    def track(self, track: Track) -> dict[str, Any]:
        artists = [
            {
                "id": aid,
                "name": name,
                "type": "artist",
                "uri": f"spotify:artist:{aid}",
                "href": f"{self.base}/v1/artists/{aid}",
                "external_urls": {"spotify": f"https://open.spotify.com/artist/{aid}"},
            }
            for aid, name in track.artists
        ]
        album_id = hashlib.sha256(f"album:{track.album}".encode()).hexdigest()[:22]
        precision = {4: "year", 7: "month"}.get(len(track.release_date), "day")
        # No popularity or available_markets (removed Feb 2026).
        return {
            "id": track.id,
            "name": track.name,
            "type": "track",
            "uri": f"spotify:track:{track.id}",
            "href": f"{self.base}/v1/tracks/{track.id}",
            "external_urls": {"spotify": f"https://open.spotify.com/track/{track.id}"},
            "artists": artists,
            "album": {
                "id": album_id,
                "name": track.album,
                "album_type": "album",
                "type": "album",
                "uri": f"spotify:album:{album_id}",
                "release_date": track.release_date,
                "release_date_precision": precision,
                "images": [],
                "artists": artists,
            },
            "duration_ms": track.duration_ms,
            "explicit": False,
            "is_local": False,
            "disc_number": 1,
            "track_number": 1,
        }

    def known_track(self, track_id: str) -> Track:
        track = self.state.tracks.get(track_id)
        if track is None:  # Spotify knows every track; the sandbox makes one up
            track = Track(
                track_id, f"Track {track_id}", [("0" * 22, "Unknown Artist")], "", "", 180_000, []
            )
        return track

    def page(
        self, items: list[Any], limit: int, offset: int, path: str, **query: str
    ) -> dict[str, Any]:
        """A Spotify paging object over ``items``."""
        total = len(items)

        def href(at: int) -> str:
            return f"{self.base}{path}?{urlencode({'offset': at, 'limit': limit, **query})}"

        return {
            "href": href(offset),
            "items": items[offset : offset + limit],
            "limit": limit,
            "next": href(offset + limit) if offset + limit < total else None,
            "offset": offset,
            "previous": href(max(0, offset - limit)) if offset > 0 else None,
            "total": total,
        }

    def playlist(self, playlist: Playlist, limit: int = 100) -> dict[str, Any]:
        owner = self.user(self.state.listeners[playlist.owner])
        return {
            "id": playlist.id,
            "name": playlist.name,
            "description": playlist.description,
            "public": playlist.public,
            "collaborative": playlist.collaborative,
            "type": "playlist",
            "uri": f"spotify:playlist:{playlist.id}",
            "href": f"{self.base}/v1/playlists/{playlist.id}",
            "external_urls": {"spotify": f"https://open.spotify.com/playlist/{playlist.id}"},
            "images": [],
            "owner": {
                k: owner[k] for k in ("id", "display_name", "type", "uri", "href", "external_urls")
            },
            "snapshot_id": self.snapshot(playlist),
            # Was "tracks" before February 2026.
            "items": self.page(
                self.playlist_items(playlist), limit, 0, f"/v1/playlists/{playlist.id}/items"
            ),
        }

    def simplified_playlist(self, playlist: Playlist) -> dict[str, Any]:
        """A playlist as lists of playlists show it: its items only counted."""
        full = self.playlist(playlist, limit=1)
        full["items"] = {
            "href": f"{self.base}/v1/playlists/{playlist.id}/items",
            "total": len(playlist.items),
        }
        return full

    def playlist_items(self, playlist: Playlist) -> list[dict[str, Any]]:
        owner = self.state.listeners[playlist.owner]
        return [
            {
                "added_at": added_at,
                "added_by": {"id": owner.id, "type": "user", "uri": f"spotify:user:{owner.id}"},
                "is_local": False,
                "item": self.track(self.known_track(track_id)),  # was "track"
            }
            for track_id, added_at in playlist.items
        ]

    @staticmethod
    def snapshot(playlist: Playlist) -> str:
        return base64.urlsafe_b64encode(f"{playlist.id}:{playlist.snapshots}".encode()).decode()
