"""Saving recommendations as a playlist in the listener's account (Spotify, February 2026 API).

``POST /v1/me/playlists`` creates it and ``POST /v1/playlists/{id}/items`` adds at most 100
URIs per request. With an ``Idempotency-Key`` the export is recorded per listener and key:
a retry of a finished export answers the first result, and a retry of a failed one resumes
where it stopped (same playlist, remaining tracks) instead of making a second playlist.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from emergify_contracts.problems import ProblemError
from emergify_contracts.spotify_tables import idempotent_playlists
from emergify_spotify.schemas import PlaylistCreated, PlaylistRequest
from emergify_spotify.spotify_api import SpotifyApi

MAX_URIS_PER_REQUEST = 100
# A "pending" export older than this is taken to have died with its process, and is resumed.
STALE_PENDING_SECONDS = 300


def chunks(items: list[str], size: int = MAX_URIS_PER_REQUEST) -> list[list[str]]:
    """``items`` in consecutive slices of at most ``size``."""
    return [items[i : i + size] for i in range(0, len(items), size)]


def request_hash(request: PlaylistRequest) -> str:
    """Fingerprint of a request, to refuse an Idempotency-Key reused for different content."""
    return hashlib.sha256(
        json.dumps(request.model_dump(mode="json"), sort_keys=True).encode()
    ).hexdigest()


@dataclass
class Progress:
    """How far an export got: the playlist (once created) and the tracks added to it."""

    playlist_id: str | None = None
    url: str | None = None
    added: int = 0


def _url_of(playlist: dict) -> str:
    return (playlist.get("external_urls") or {}).get(
        "spotify", f"https://open.spotify.com/playlist/{playlist['id']}"
    )


def run_export(
    api: SpotifyApi,
    request: PlaylistRequest,
    progress: Progress,
    on_progress: Callable[[Progress], None] = lambda p: None,
) -> PlaylistCreated:
    """Create the playlist (unless ``progress`` has one) and add the tracks not added yet."""
    if progress.playlist_id is None:
        playlist = api.call(
            lambda sp: sp.current_user_playlist_create(  # POST /v1/me/playlists
                request.name,
                public=request.public,
                collaborative=False,
                description=request.description,
            ),
            "create the playlist",
        )
        progress.playlist_id, progress.url = playlist["id"], _url_of(playlist)
        on_progress(progress)
    playlist_id = progress.playlist_id
    uris = [f"spotify:track:{track_id}" for track_id in request.track_ids]
    path = f"playlists/{playlist_id}/items"
    for chunk in chunks(uris[progress.added :]):
        # spotipy's playlist_add_items posts a bare list; Spotify documents {"uris": [...]}.
        api.call(
            lambda sp, chunk=chunk: sp._post(path, payload={"uris": chunk}),
            "add tracks to the playlist",
        )
        progress.added += len(chunk)
        on_progress(progress)
    return PlaylistCreated(
        id=playlist_id,
        url=progress.url or f"https://open.spotify.com/playlist/{playlist_id}",
        added=progress.added,
        name=request.name,
    )


class IdempotencyLedger:
    """The ``idempotent_playlists`` table: one row per (listener, Idempotency-Key)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _where(self, listener_id: str, key: str) -> sa.ColumnElement[bool]:
        t = idempotent_playlists
        return sa.and_(t.c.listener_id == listener_id, t.c.idempotency_key == key)

    def claim(
        self, listener_id: str, key: str, fingerprint: str
    ) -> tuple[PlaylistCreated | None, Progress]:
        """Start (or resume) the export for ``key``: (stored result if it finished, progress).

        Raises 422 when the key was used for another request, 409 while another request with
        the key is still running.
        """
        now = int(time.time())
        t = idempotent_playlists
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.insert().values(
                        listener_id=listener_id,
                        idempotency_key=key,
                        request_hash=fingerprint,
                        status="pending",
                        added=0,
                        created_at=now,
                        updated_at=now,
                    )
                )
            return None, Progress()
        except IntegrityError:
            pass
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t).where(self._where(listener_id, key))).one()
            if row.request_hash != fingerprint:
                raise ProblemError(
                    422,
                    "this Idempotency-Key was already used for a different playlist request; "
                    "use a new key for a new playlist",
                    title="Idempotency-Key reused",
                )
            if row.status == "done":
                return PlaylistCreated.model_validate(row.result), Progress()
            if row.status == "pending" and now - row.updated_at < STALE_PENDING_SECONDS:
                raise ProblemError(
                    409,
                    "a request with this Idempotency-Key is still running; retry in a moment",
                    headers={"Retry-After": "2"},
                )
            # Failed (or abandoned): take it over, unless another retry just did.
            taken = conn.execute(
                t.update()
                .where(self._where(listener_id, key))
                .where(t.c.status == row.status, t.c.updated_at == row.updated_at)
                .values(status="pending", updated_at=now)
            ).rowcount
        if taken != 1:
            raise ProblemError(
                409,
                "a request with this Idempotency-Key is still running; retry in a moment",
                headers={"Retry-After": "2"},
            )
        url = f"https://open.spotify.com/playlist/{row.playlist_id}" if row.playlist_id else None
        return None, Progress(playlist_id=row.playlist_id, url=url, added=row.added)

    def record_progress(self, listener_id: str, key: str, progress: Progress) -> None:
        """Remember the playlist id and tracks added, so a retry resumes instead of repeating."""
        with self.engine.begin() as conn:
            conn.execute(
                idempotent_playlists.update()
                .where(self._where(listener_id, key))
                .values(
                    playlist_id=progress.playlist_id,
                    added=progress.added,
                    updated_at=int(time.time()),
                )
            )

    def finish(self, listener_id: str, key: str, result: PlaylistCreated | None) -> None:
        """Mark the export done with ``result``, or failed (``None``) so a retry may resume."""
        with self.engine.begin() as conn:
            conn.execute(
                idempotent_playlists.update()
                .where(self._where(listener_id, key))
                .values(
                    status="done" if result else "failed",
                    result=result.model_dump(mode="json") if result else None,
                    updated_at=int(time.time()),
                )
            )


def export_playlist(
    api: SpotifyApi,
    ledger: IdempotencyLedger,
    request: PlaylistRequest,
    idempotency_key: str | None,
) -> tuple[PlaylistCreated, bool]:
    """Export ``request``; (result, replayed) where replayed means an earlier request with the
    same Idempotency-Key had already made it."""
    if not idempotency_key:
        return run_export(api, request, Progress()), False
    listener_id = api.listener_id
    stored, progress = ledger.claim(listener_id, idempotency_key, request_hash(request))
    if stored is not None:
        return stored, True
    try:
        result = run_export(
            api,
            request,
            progress,
            lambda p: ledger.record_progress(listener_id, idempotency_key, p),
        )
    except BaseException:
        ledger.finish(listener_id, idempotency_key, None)
        raise
    ledger.finish(listener_id, idempotency_key, result)
    return result, False
