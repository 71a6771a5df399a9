"""The sandbox app: Spotify's accounts service (``/authorize``, ``/api/token``), the Web API
endpoints Emergify calls (``/v1/...``), and test controls under ``/_sandbox``.

State lives in memory; a restart signs everybody out, as a Spotify outage would not, but a
demo does not mind.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
import secrets
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from emergify_spotify.sandbox.config import SandboxSettings
from emergify_spotify.sandbox.listeners import (
    Listener,
    Track,
    build_listeners,
    read_tracks,
    top_artists,
    unknown_track,
)

KNOWN_SCOPES = frozenset(
    {
        "user-library-read",
        "user-library-modify",
        "user-top-read",
        "user-read-private",
        "user-read-email",
        "playlist-read-private",
        "playlist-read-collaborative",
        "playlist-modify-private",
        "playlist-modify-public",
    }
)
CODE_TTL_SECONDS = 600
MAX_URIS_PER_ADD = 100
_ID = re.compile(r"^[0-9A-Za-z]{22}$")
_TRACK_URI = re.compile(r"^spotify:track:([0-9A-Za-z]{22})$")


# ---- state ---------------------------------------------------------------------------------


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
        self.requests: Counter[str] = Counter()
        self.rate_limits: list[RateLimit] = []


# ---- Spotify's wire formats ----------------------------------------------------------------


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


def _path_key(method: str, path: str) -> str:
    """Requests are counted per endpoint, ids replaced by ``{id}``."""
    path = re.sub(r"/(playlists|users)/[^/]+", r"/\1/{id}", path.rstrip("/") or "/")
    return f"{method} {path}"


class Sandbox:
    """Builds the Spotify objects from the state, for one base URL."""

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


# ---- the app -------------------------------------------------------------------------------


class RateLimitBody(BaseModel):
    path_prefix: str = Field("/v1/", description="Requests whose path starts with this...")
    count: int = Field(1, ge=1, description="...are answered 429 this many times...")
    retry_after: int = Field(1, ge=0, description="...with this Retry-After (seconds).")


class ExpireBody(BaseModel):
    user: str | None = Field(None, description="Only this listener's tokens (default: all).")


def _consent_page(params: dict[str, str], users: list[Listener], chosen: str) -> str:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in params.items()
    )
    options = "".join(
        f'<option value="{u.id}"{" selected" if u.id == chosen else ""}>'
        f"{html.escape(u.display_name)} ({u.id})</option>"
        for u in users
    )
    scopes = "".join(f"<li>{html.escape(s)}</li>" for s in params.get("scope", "").split())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Spotify sandbox – sign in</title>
<style>body{{font-family:sans-serif;background:#121212;color:#fff;max-width:30rem;margin:3rem auto}}
button{{background:#1db954;border:0;border-radius:2rem;padding:.8rem 2rem;margin:.3rem}}
#cancel{{background:#535353;color:#fff}}</style></head>
<body><h1>Spotify sandbox</h1>
<p>An offline stand-in for Spotify. <b>{html.escape(params.get("client_id", ""))}</b> asks to:</p>
<ul>{scopes}</ul>
<form method="post" action="/authorize">{hidden}
<label for="user">Sign in as</label> <select id="user" name="user">{options}</select><br><br>
<button id="agree" name="decision" value="agree" type="submit">Agree</button>
<button id="cancel" name="decision" value="cancel" type="submit">Cancel</button>
</form></body></html>"""


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """The sandbox app; ``settings`` defaults to the environment's."""
    settings = settings or SandboxSettings()
    state = SandboxState(settings)
    sandbox = Sandbox(state, settings.spotify_sandbox_url)
    client_secret_bytes = settings.spotify_sandbox_client_secret.get_secret_value().encode()
    app = FastAPI(title="Spotify sandbox", version="1.0.0", docs_url="/_sandbox/docs")
    app.state.sandbox = state

    class CountAndThrottle(BaseHTTPMiddleware):
        async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
            path = request.url.path
            if path.startswith("/_sandbox"):
                return await call_next(request)
            with state.lock:
                state.requests[_path_key(request.method, path)] += 1
                limit = next(
                    (
                        r
                        for r in state.rate_limits
                        if path.startswith(r.path_prefix) and r.remaining
                    ),
                    None,
                )
                if limit is not None:
                    limit.remaining -= 1
            if limit is not None:
                return api_error(
                    429, "API rate limit exceeded", headers={"Retry-After": str(limit.retry_after)}
                )
            return await call_next(request)

    app.add_middleware(CountAndThrottle)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return api_error(exc.status, exc.message)

    # -- accounts service ----------------------------------------------------------------

    def check_authorize(params: dict[str, str]) -> Response | None:
        """None when the request may go on to consent; else the answer Spotify would give."""
        if params.get("client_id") != settings.spotify_sandbox_client_id:
            return HTMLResponse("<h1>INVALID_CLIENT: Invalid client</h1>", status_code=400)
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in settings.spotify_sandbox_redirect_uris:
            return HTMLResponse("<h1>INVALID_CLIENT: Invalid redirect URI</h1>", status_code=400)

        def back(error: str) -> Response:
            query = {"error": error, **({"state": params["state"]} if "state" in params else {})}
            return RedirectResponse(f"{redirect_uri}?{urlencode(query)}", status_code=303)

        if params.get("response_type") != "code":
            return back("unsupported_response_type")
        challenge = params.get("code_challenge")
        if challenge is not None or "code_challenge_method" in params:
            if params.get("code_challenge_method") != "S256":
                return back("invalid_request")
            if not challenge or not re.fullmatch(r"[A-Za-z0-9_-]{43}", challenge):
                return back("invalid_request")
        if not set(params.get("scope", "").split()) <= KNOWN_SCOPES:
            return back("invalid_scope")
        return None

    def grant_code(params: dict[str, str], user: str) -> RedirectResponse:
        code = secrets.token_urlsafe(32)
        with state.lock:
            state.codes[code] = Grant(
                user=user,
                client_id=params["client_id"],
                scope=params.get("scope", ""),
                expires_at=time.time() + CODE_TTL_SECONDS,
                redirect_uri=params["redirect_uri"],
                challenge=params.get("code_challenge"),
            )
        query = {"code": code, **({"state": params["state"]} if "state" in params else {})}
        return RedirectResponse(f"{params['redirect_uri']}?{urlencode(query)}", status_code=303)

    @app.get("/authorize", response_model=None, include_in_schema=True, tags=["accounts"])
    def authorize(request: Request) -> Response:
        """Spotify's authorize page: a consent page, or straight back with auto-approve.
        ``login_hint`` (sandbox only) picks the demo listener."""
        params = dict(request.query_params)
        refusal = check_authorize(params)
        if refusal is not None:
            return refusal
        chosen = params.pop("login_hint", "demo")
        if chosen not in state.listeners:
            chosen = "demo"
        if settings.spotify_sandbox_auto_approve:
            return grant_code(params, chosen)
        return HTMLResponse(_consent_page(params, list(state.listeners.values()), chosen))

    @app.post("/authorize", response_model=None, tags=["accounts"])
    async def consent(request: Request) -> Response:
        """The consent form: Agree issues a code, Cancel answers ``error=access_denied``."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        decision, user = form.pop("decision", "cancel"), form.pop("user", "demo")
        refusal = check_authorize(form)
        if refusal is not None:
            return refusal
        if decision != "agree":
            query = {
                "error": "access_denied",
                **({"state": form["state"]} if "state" in form else {}),
            }
            return RedirectResponse(f"{form['redirect_uri']}?{urlencode(query)}", status_code=303)
        return grant_code(form, user if user in state.listeners else "demo")

    def issue_tokens(grant: Grant, refresh_token: str | None) -> dict[str, Any]:
        access = secrets.token_urlsafe(48)
        lifetime = settings.spotify_sandbox_access_token_seconds
        with state.lock:
            state.access_tokens[access] = Grant(
                grant.user, grant.client_id, grant.scope, expires_at=time.time() + lifetime
            )
            body: dict[str, Any] = {
                "access_token": access,
                "token_type": "Bearer",
                "scope": grant.scope,
                "expires_in": lifetime,
            }
            if refresh_token is None or settings.spotify_sandbox_rotate_refresh_tokens:
                if refresh_token is not None:
                    state.refresh_tokens.pop(refresh_token, None)
                new_refresh = secrets.token_urlsafe(48)
                state.refresh_tokens[new_refresh] = Grant(grant.user, grant.client_id, grant.scope)
                body["refresh_token"] = new_refresh
        return body

    @app.post("/api/token", response_model=None, tags=["accounts"])
    def token(
        request: Request,
        grant_type: Annotated[str, Form()] = "",
        code: Annotated[str | None, Form()] = None,
        redirect_uri: Annotated[str | None, Form()] = None,
        code_verifier: Annotated[str | None, Form()] = None,
        refresh_token: Annotated[str | None, Form()] = None,
        client_id: Annotated[str | None, Form()] = None,
        client_secret: Annotated[str | None, Form()] = None,
    ) -> JSONResponse:
        """Spotify's token endpoint: authorization_code (with PKCE) and refresh_token."""
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                client_id, _, client_secret = base64.b64decode(credentials).decode().partition(":")
            except ValueError:
                return oauth_error("invalid_client", "Invalid client")
        if client_id != settings.spotify_sandbox_client_id:
            return oauth_error("invalid_client", "Invalid client")
        if client_secret is not None and not hmac.compare_digest(
            client_secret.encode(), client_secret_bytes
        ):
            return oauth_error("invalid_client", "Invalid client secret")
        if grant_type == "authorization_code":
            with state.lock:
                grant = state.codes.pop(code or "", None)  # a code works once
            if grant is None or grant.expires_at < time.time():
                return oauth_error("invalid_grant", "Invalid authorization code")
            if grant.client_id != client_id:
                return oauth_error("invalid_grant", "Invalid authorization code")
            if redirect_uri != grant.redirect_uri:
                return oauth_error("invalid_grant", "Invalid redirect URI")
            if grant.challenge is not None:
                if not code_verifier:
                    return oauth_error("invalid_request", "code_verifier required")
                digest = hashlib.sha256(code_verifier.encode()).digest()
                expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
                if not hmac.compare_digest(expected, grant.challenge):
                    return oauth_error("invalid_grant", "code_verifier was incorrect")
            elif client_secret is None:
                return oauth_error("invalid_client", "Invalid client secret")
            return JSONResponse(issue_tokens(grant, None))
        if grant_type == "refresh_token":
            with state.lock:
                grant = state.refresh_tokens.get(refresh_token or "")
            if grant is None or grant.client_id != client_id:
                return oauth_error("invalid_grant", "Invalid refresh token")
            return JSONResponse(issue_tokens(grant, refresh_token))
        return oauth_error("unsupported_grant_type", f"grant_type {grant_type!r} is not supported")

    # -- Web API -------------------------------------------------------------------------

    def bearer(request: Request, scope: str | None = None) -> Listener:
        scheme, _, access = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not access:
            raise ApiError(401, "No token provided")
        with state.lock:
            grant = state.access_tokens.get(access)
        if grant is None:
            raise ApiError(401, "Invalid access token")
        if grant.expires_at <= time.time():
            raise ApiError(401, "The access token expired")
        if scope is not None and not set(scope.split("|")) & set(grant.scope.split()):
            raise ApiError(403, "Insufficient client scope")
        return state.listeners[grant.user]

    def check_paging(limit: int, offset: int, most: int = 50) -> None:
        if not 1 <= limit <= most:
            raise ApiError(400, "Invalid limit")
        if offset < 0:
            raise ApiError(400, "Invalid offset")

    @app.get("/v1/me/", include_in_schema=False)  # spotipy's me() asks for "me/"
    @app.get("/v1/me", tags=["web api"])
    def me(request: Request) -> dict[str, Any]:
        return sandbox.user(bearer(request))

    @app.get("/v1/me/top/artists", tags=["web api"])
    def top(
        request: Request, limit: int = 20, offset: int = 0, time_range: str = "medium_term"
    ) -> dict[str, Any]:
        listener = bearer(request, "user-top-read")
        check_paging(limit, offset)
        if time_range not in ("short_term", "medium_term", "long_term"):
            raise ApiError(400, "Invalid time range")
        artists = [sandbox.artist(a) for a in top_artists(listener)]
        return sandbox.page(artists, limit, offset, "/v1/me/top/artists", time_range=time_range)

    @app.get("/v1/me/tracks", tags=["web api"])
    def saved_tracks(request: Request, limit: int = 20, offset: int = 0) -> dict[str, Any]:
        listener = bearer(request, "user-library-read")
        check_paging(limit, offset)
        items = [{"added_at": at, "track": sandbox.track(t)} for t, at in listener.liked]
        return sandbox.page(items, limit, offset, "/v1/me/tracks")

    @app.get("/v1/audio-features", tags=["web api"])
    def audio_features(request: Request, ids: str = "") -> dict[str, Any]:
        bearer(request)
        if not settings.spotify_sandbox_allow_audio_features:
            # What new and development-mode apps get since 27 Nov 2024.
            raise ApiError(403, "Forbidden")
        wanted = [i for i in ids.split(",") if i]
        if not wanted or len(wanted) > 100 or not all(_ID.match(i) for i in wanted):
            raise ApiError(400, "Invalid ids")
        out: list[dict[str, Any] | None] = []
        for track_id in wanted:
            track = state.tracks.get(track_id)
            if track is None or track.features is None:
                out.append(None)
                continue
            out.append(
                {
                    "id": track_id,
                    "type": "audio_features",
                    "uri": f"spotify:track:{track_id}",
                    "track_href": f"{sandbox.base}/v1/tracks/{track_id}",
                    "duration_ms": track.duration_ms,
                    **track.features,
                }
            )
        return {"audio_features": out}

    async def json_body(request: Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            raise ApiError(400, "Error parsing JSON.") from None

    @app.post("/v1/me/playlists", status_code=201, tags=["web api"])
    async def create_playlist(request: Request) -> JSONResponse:
        body = await json_body(request)
        if not isinstance(body, dict) or not body.get("name"):
            raise ApiError(400, "Missing required field: name")
        public = bool(body.get("public", True))
        listener = bearer(
            request, "playlist-modify-public" if public else "playlist-modify-private"
        )
        playlist = Playlist(
            id=secrets.token_hex(11),
            owner=listener.id,
            name=str(body["name"]),
            description=str(body.get("description") or ""),
            public=public,
            collaborative=bool(body.get("collaborative", False)),
        )
        with state.lock:
            state.playlists[playlist.id] = playlist
        return JSONResponse(sandbox.playlist(playlist), status_code=201)

    def own_playlist(playlist_id: str, listener: Listener) -> Playlist:
        playlist = state.playlists.get(playlist_id)
        if playlist is None:
            raise ApiError(404, "Resource not found")
        if playlist.owner != listener.id and not playlist.public:
            raise ApiError(403, "Forbidden")
        return playlist

    @app.get("/v1/playlists/{playlist_id}", tags=["web api"])
    def get_playlist(request: Request, playlist_id: str) -> dict[str, Any]:
        return sandbox.playlist(own_playlist(playlist_id, bearer(request)))

    @app.get("/v1/playlists/{playlist_id}/items", tags=["web api"])
    def get_items(
        request: Request, playlist_id: str, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        playlist = own_playlist(playlist_id, bearer(request))
        check_paging(limit, offset, most=100)
        items = sandbox.playlist_items(playlist)
        return sandbox.page(items, limit, offset, f"/v1/playlists/{playlist_id}/items")

    @app.post("/v1/playlists/{playlist_id}/items", status_code=201, tags=["web api"])
    async def add_items(
        request: Request, playlist_id: str, uris: Annotated[str | None, Query()] = None
    ) -> JSONResponse:
        listener = bearer(request, "playlist-modify-public|playlist-modify-private")
        playlist = own_playlist(playlist_id, listener)
        if playlist.owner != listener.id:
            raise ApiError(403, "You cannot add tracks to a playlist you don't own.")
        position = None
        if uris is not None:
            wanted = uris.split(",")
        else:
            body = await json_body(request)
            if isinstance(body, list):  # spotipy's playlist_add_items sends a bare array
                wanted = body
            elif isinstance(body, dict) and isinstance(body.get("uris"), list):
                wanted, position = body["uris"], body.get("position")
            else:
                raise ApiError(400, "Missing required field: uris")
        if len(wanted) > MAX_URIS_PER_ADD:
            raise ApiError(400, "You can add a maximum of 100 tracks per request.")
        ids = []
        for uri in wanted:
            match = _TRACK_URI.match(str(uri))
            if not match:
                raise ApiError(400, f"Invalid track uri: {uri}")
            ids.append(match.group(1))
        added_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with state.lock:
            at = len(playlist.items) if position is None else int(position)
            playlist.items[at:at] = [(i, added_at) for i in ids]
            playlist.snapshots += 1
        return JSONResponse({"snapshot_id": sandbox.snapshot(playlist)}, status_code=201)

    # Removed in February 2026: they answer 403 as Spotify does, so a regression fails tests.
    @app.post("/v1/users/{user_id}/playlists", tags=["removed"])
    def removed_create(user_id: str) -> JSONResponse:
        return api_error(403, "Forbidden")

    # One route per method: a route of several methods documents them all under one
    # operationId, which OpenAPI forbids.
    @app.get("/v1/playlists/{playlist_id}/tracks", tags=["removed"])
    @app.post("/v1/playlists/{playlist_id}/tracks", tags=["removed"])
    @app.put("/v1/playlists/{playlist_id}/tracks", tags=["removed"])
    @app.delete("/v1/playlists/{playlist_id}/tracks", tags=["removed"])
    def removed_tracks(playlist_id: str) -> JSONResponse:
        return api_error(403, "Forbidden")

    # -- test controls -------------------------------------------------------------------

    @app.post("/_sandbox/rate-limit", tags=["sandbox"])
    def rate_limit(body: RateLimitBody) -> dict[str, Any]:
        """Answer the next ``count`` requests under ``path_prefix`` with 429."""
        with state.lock:
            state.rate_limits.append(RateLimit(body.path_prefix, body.count, body.retry_after))
        return body.model_dump()

    @app.get("/_sandbox/requests", tags=["sandbox"])
    def requests_seen() -> dict[str, dict[str, int]]:
        """Requests received per endpoint (``"POST /v1/me/playlists": 1``)."""
        with state.lock:
            return {"counts": dict(state.requests)}

    @app.delete("/_sandbox/requests", tags=["sandbox"])
    def reset_requests() -> dict[str, dict[str, int]]:
        with state.lock:
            state.requests.clear()
        return {"counts": {}}

    @app.post("/_sandbox/expire-tokens", tags=["sandbox"])
    def expire_tokens(body: ExpireBody) -> dict[str, int]:
        """Expire access tokens now (the client still believes them valid)."""
        expired = 0
        with state.lock:
            for grant in state.access_tokens.values():
                if body.user in (None, grant.user) and grant.expires_at > 0:
                    grant.expires_at = 0
                    expired += 1
        return {"expired": expired}

    @app.get("/_sandbox/tokens", tags=["sandbox"])
    def tokens(user: str) -> dict[str, list[str]]:
        """The live tokens of ``user`` (tests check they are not stored in clear)."""
        with state.lock:
            return {
                "access_tokens": [t for t, g in state.access_tokens.items() if g.user == user],
                "refresh_tokens": [t for t, g in state.refresh_tokens.items() if g.user == user],
            }

    @app.get("/_sandbox/users/{user}/playlists", tags=["sandbox"])
    def user_playlists(user: str) -> dict[str, Any]:
        with state.lock:
            mine = [p for p in state.playlists.values() if p.owner == user]
            return {
                "items": [
                    {
                        "id": p.id,
                        "name": p.name,
                        "public": p.public,
                        "track_ids": [i for i, _ in p.items],
                    }
                    for p in mine
                ]
            }

    @app.get("/_sandbox/users", tags=["sandbox"])
    def users() -> dict[str, Any]:
        """The demo listeners and their liked songs."""
        return {
            "items": [
                {
                    "id": u.id,
                    "display_name": u.display_name,
                    "liked_track_ids": [t.id for t, _ in u.liked],
                }
                for u in state.listeners.values()
            ]
        }

    @app.get("/health", tags=["sandbox"])
    def health() -> dict[str, str]:
        return {"status": "ok", "service": "spotify-sandbox"}

    return app
