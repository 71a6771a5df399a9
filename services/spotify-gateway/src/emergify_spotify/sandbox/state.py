"""What the sandbox remembers: grants, tokens, playlists, request counts, injected 429s.

State lives in memory; a restart signs everybody out, which a demo does not mind.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from emergify_spotify.sandbox.config import SandboxSettings
from emergify_spotify.sandbox.listeners import (
    Listener,
    Track,
    build_listeners,
    read_tracks,
    unknown_track,
)


@dataclass
class Grant:
    """What a code or token stands for."""

    user: str
    client_id: str
    scope: str
    expires_at: float = 0.0
    redirect_uri: str = ""
    challenge: str | None = None


@dataclass
class Playlist:
    id: str
    owner: str
    name: str
    description: str
    public: bool
    collaborative: bool
    items: list[tuple[str, str]] = field(default_factory=list)  # (track id, added_at)
    snapshots: int = 1


@dataclass
class RateLimit:
    path_prefix: str
    remaining: int
    retry_after: int


class SandboxState:
    """Everything the sandbox remembers, guarded by one lock."""

    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.lock = threading.Lock()
        csv_tracks = read_tracks(Path(settings.spotify_sandbox_catalog_csv))
        if not csv_tracks:  # no CSV: the demo still works, with songs the catalog lacks
            csv_tracks = [unknown_track(100 + n) for n in range(90)]
        self.tracks: dict[str, Track] = {t.id: t for t in csv_tracks}
        self.listeners: dict[str, Listener] = build_listeners(
            csv_tracks, settings.spotify_sandbox_liked_songs
        )
        for listener in self.listeners.values():
            for track, _ in listener.liked:
                self.tracks.setdefault(track.id, track)
        self.codes: dict[str, Grant] = {}
        self.access_tokens: dict[str, Grant] = {}
        self.refresh_tokens: dict[str, Grant] = {}
        self.playlists: dict[str, Playlist] = {}
        self._demo_playlists(csv_tracks)
        self.requests: Counter[str] = Counter()
        self.rate_limits: list[RateLimit] = []

    def _demo_playlists(self, tracks: list[Track]) -> None:
        """A playlist of the demo listener's own, of catalog songs they have not liked, so
        that expanding a playlist has something to start from."""
        owner = self.listeners.get("demo")
        if owner is None:
            return
        liked = {t.id for t, _ in owner.liked}
        songs = [t for t in tracks[200:] if t.id not in liked][:12]
        playlist = Playlist(
            id="demoroadtrip000000000a",
            owner=owner.id,
            name="Road trip",
            description="A demo listener's own playlist",
            public=False,
            collaborative=False,
            items=[(t.id, "2026-10-01T12:00:00Z") for t in songs],
        )
        self.playlists[playlist.id] = playlist
