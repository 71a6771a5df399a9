"""The dashboard's only way out: HTTP calls to the API gateway (httpx).

Every call returns plain JSON (dicts and lists) or raises :class:`ApiError`, whose message is
the problem+json ``detail`` the gateway answered, so pages can show it as it is.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from emergify_contracts.internal_auth import VIEWER_HEADER
from emergify_contracts.session import SESSION_COOKIE

SPOTIFY_PREFIX = "/api/v1/spotify"
UPLOAD_PATH = "/api/v1/songs/upload"
FEEDBACK_PATH = "/api/v1/feedback"
MY_FEEDBACK_PATH = "/api/v1/listeners/me/feedback"
RECOMMENDATIONS_PATH = "/api/v1/recommendations"
#: Routes that act for the signed-in listener, so their session cookie goes along: the
#: Spotify routes, the upload, feedback, what Emergify keeps about them, and recommendations
#: (which leave out their dislikes and banned artists).
_SESSION_PATHS = (UPLOAD_PATH, FEEDBACK_PATH, MY_FEEDBACK_PATH, RECOMMENDATIONS_PATH)
#: Signals a listener can send from the dashboard.
SIGNALS = ("like", "dislike", "ban_artist", "skip")


class ApiError(Exception):
    """A call to the gateway failed; ``str(error)`` is a sentence a listener can read."""

    def __init__(
        self,
        message: str,
        status: int | None = None,
        title: str | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.body = body or {}


def problem_message(response: httpx.Response) -> str:
    """A readable message from an error response (RFC 9457 problem+json, or plain text)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip()[:300]
        return f"HTTP {response.status_code}: {text or response.reason_phrase}"
    if not isinstance(body, dict):
        return f"HTTP {response.status_code}: {str(body)[:300]}"
    detail = body.get("detail")
    if isinstance(detail, list):  # a bare FastAPI 422, should a service not convert it
        detail = "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
    title = body.get("title") or response.reason_phrase
    return f"{title}: {detail}" if detail else f"{title} (HTTP {response.status_code})"


class _CountingReader(io.RawIOBase):
    """A readable file that reports how many bytes httpx has read so far (upload progress)."""

    def __init__(self, data: bytes, on_progress: Callable[[int, int], None]) -> None:
        self._data = io.BytesIO(data)
        self._total = len(data)
        self._on_progress = on_progress

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self._on_progress(self._data.tell(), self._total)
        return chunk


class GatewayClient:
    """Calls the gateway with the dashboard's API key and, for ``/api/v1/spotify/*``, the
    listener's session cookie (the spotify-gateway knows the listener by that cookie alone)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        session_cookie: str | None = None,
        timeout: float = 30.0,
        upload_timeout: float = 300.0,
        public_url: str | None = None,
        viewer_id: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.session_cookie = session_cookie
        self._upload_timeout = upload_timeout
        headers = {"Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
        if viewer_id:
            # Gives this browser session its own rate-limit bucket at the gateway (which trusts
            # the header only with the dashboard's key).
            headers[VIEWER_HEADER] = viewer_id
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _request(
        self, method: str, path: str, expect: tuple[int, ...] = (200,), **kwargs: Any
    ) -> Any:
        headers = dict(kwargs.pop("headers", None) or {})
        if (path.startswith(SPOTIFY_PREFIX) or path in _SESSION_PATHS) and self.session_cookie:
            # Only the session cookie goes out, and only to routes that act for the listener
            # (the catalog and model routes never see it).
            headers["Cookie"] = f"{SESSION_COOKIE}={self.session_cookie}"
        try:
            response = self._http.request(method, path, headers=headers, **kwargs)
        except httpx.TimeoutException:
            raise ApiError(
                f"the API gateway at {self.base_url} did not answer {method} {path} in time; "
                "try again in a moment"
            ) from None
        except httpx.HTTPError as exc:
            raise ApiError(
                f"cannot reach the API gateway at {self.base_url} ({type(exc).__name__}); "
                "is the stack running (`make up`)?"
            ) from None
        if response.status_code not in expect:
            try:
                body = response.json()
            except ValueError:
                body = None
            raise ApiError(
                problem_message(response),
                status=response.status_code,
                title=body.get("title") if isinstance(body, dict) else None,
                body=body if isinstance(body, dict) else None,
            )
        return response.json() if response.content else None

    def url(self, path: str) -> str:
        """The gateway URL of ``path`` as the browser reaches it (links such as sign-in)."""
        return f"{self.public_url}{path}"

    # -- the listener (Spotify) ---------------------------------------------------------------

    def me(self) -> dict[str, Any]:
        """The signed-in listener's profile."""
        return self._request("GET", f"{SPOTIFY_PREFIX}/me")

    def top_artists(self, limit: int = 10) -> list[dict[str, Any]]:
        """The listener's most listened artists, with images."""
        return self._request("GET", f"{SPOTIFY_PREFIX}/me/top-artists", params={"limit": limit})[
            "items"
        ]

    def latest_added(self) -> dict[str, Any]:
        """The song the listener liked last."""
        return self._request("GET", f"{SPOTIFY_PREFIX}/me/latest-added")["song"]

    def liked(self, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        """Liked songs, newest first, each marked ``in_catalog``."""
        return self._request(
            "GET", f"{SPOTIFY_PREFIX}/me/liked", params={"limit": limit, "offset": offset}
        )

    def favourite(self) -> dict[str, Any]:
        """A random liked song the catalog knows, with its features."""
        return self._request("GET", f"{SPOTIFY_PREFIX}/me/favourite")

    def sign_out(self) -> None:
        """End the listener's session: the gateway revokes the cookie, Spotify tokens go."""
        self._request("POST", f"{SPOTIFY_PREFIX}/logout", expect=(200, 303))

    def create_playlist(
        self, name: str, track_ids: list[str], description: str = "", public: bool = False
    ) -> dict[str, Any]:
        """Save a playlist in the listener's account; ``{id, url, added, name}``.

        The Idempotency-Key is derived from the request, so pressing *Save* twice (or a retry
        after a timeout) does not make a second playlist.
        """
        body = {"name": name, "description": description, "public": public, "track_ids": track_ids}
        key = self._idempotency_key(body)
        return self._request(
            "POST",
            f"{SPOTIFY_PREFIX}/playlists",
            expect=(200, 201),
            json=body,
            headers={"Idempotency-Key": key},
        )

    # -- the catalog and recommendations ------------------------------------------------------

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Catalog songs whose name or artists contain ``query``."""
        return self._request("GET", "/api/v1/songs", params={"q": query, "limit": limit})["items"]

    def song(self, track_id: str) -> dict[str, Any]:
        """One catalog song with its features."""
        return self._request("GET", f"/api/v1/songs/{track_id}")

    def _idempotency_key(self, body: dict[str, Any]) -> str:
        """The same request from the same listener gets the same key (a double press or a
        retry after a timeout creates nothing twice)."""
        return hashlib.sha256(
            json.dumps([self.session_cookie, body], sort_keys=True).encode()
        ).hexdigest()

    # -- the listener loop: feedback, taste, expand, living playlists -------------------------

    def send_feedback(self, track_id: str, signal: str) -> dict[str, Any]:
        """Tell Emergify what the signed-in listener thinks of a song; ``{event_id, ...}``."""
        if signal not in SIGNALS:
            raise ValueError(f"signal {signal!r} is not one of {', '.join(SIGNALS)}")
        return self._request(
            "POST", FEEDBACK_PATH, expect=(202,), json={"track_id": track_id, "signal": signal}
        )

    def my_feedback(self) -> dict[str, Any]:
        """What Emergify keeps about the listener: ``{items: [{event_id, track_id, signal,
        at}], count}``."""
        return self._request("GET", MY_FEEDBACK_PATH)

    def erase_my_feedback(self) -> dict[str, Any]:
        """Erase the listener's feedback and recommendation history (answered 202)."""
        return self._request("DELETE", MY_FEEDBACK_PATH, expect=(202,))

    def recommend_for_me(
        self,
        limit: int,
        max_popularity: int | None,
        max_per_artist: int,
        include_recent: bool = False,
    ) -> dict[str, Any]:
        """Recommendations seeded by the listener's Spotify history, with ``seeds_used``."""
        body: dict[str, Any] = {
            "limit": limit,
            "max_per_artist": max_per_artist,
            "include_recent": include_recent,
        }
        if max_popularity is not None:
            body["max_popularity"] = max_popularity
        return self._request("POST", f"{SPOTIFY_PREFIX}/recommendations/for-me", json=body)

    def my_playlists(self) -> list[dict[str, Any]]:
        """The listener's Spotify playlists: ``{id, name, items_total, in_catalog}``."""
        answer = self._request("GET", f"{SPOTIFY_PREFIX}/me/playlists")
        return answer["items"] if isinstance(answer, dict) else answer

    def expand_playlist(
        self,
        playlist_id: str,
        *,
        limit: int,
        within_distance: float | None = None,
        max_popularity: int | None = None,
        max_per_artist: int | None = None,
    ) -> dict[str, Any]:
        """Songs like those of one of the listener's playlists (none already in it):
        ``limit`` of them, or with ``within_distance`` every one that close (at most ``limit``)."""
        body: dict[str, Any] = {"limit": limit}
        if within_distance is not None:
            body["within_distance"] = within_distance
        if max_popularity is not None:
            body["max_popularity"] = max_popularity
        if max_per_artist is not None:
            body["max_per_artist"] = max_per_artist
        return self._request(
            "POST", f"{SPOTIFY_PREFIX}/playlists/{quote(playlist_id, safe='')}/expand", json=body
        )

    def create_living_playlist(
        self,
        name: str,
        size: int,
        max_popularity: int | None,
        max_per_artist: int,
        seeds: list[str] | None = None,
    ) -> dict[str, Any]:
        """A Spotify playlist Emergify keeps fresh, from ``seeds`` or (None) the listener's
        taste; ``{id, spotify_playlist_id, url, songs, ...}``."""
        body: dict[str, Any] = {"name": name, "size": size, "max_per_artist": max_per_artist}
        if max_popularity is not None:
            body["max_popularity"] = max_popularity
        if seeds:
            body["seeds"] = seeds
        else:
            body["taste"] = True
        return self._request(
            "POST", f"{SPOTIFY_PREFIX}/living-playlists", expect=(200, 201), json=body
        )

    def living_playlists(self) -> list[dict[str, Any]]:
        """The listener's living playlists, newest first, with last refresh and songs added."""
        answer = self._request("GET", f"{SPOTIFY_PREFIX}/living-playlists")
        return answer["items"] if isinstance(answer, dict) else answer

    def living_playlist(self, living_id: str) -> dict[str, Any]:
        """One living playlist with its songs (``track_id, distance, added_at``)."""
        return self._request(
            "GET", f"{SPOTIFY_PREFIX}/living-playlists/{quote(living_id, safe='')}"
        )

    def refresh_living_playlist(self, living_id: str) -> dict[str, Any]:
        """Re-rank a living playlist now."""
        return self._request(
            "POST",
            f"{SPOTIFY_PREFIX}/living-playlists/{quote(living_id, safe='')}/refresh",
            expect=(200, 202),
        )

    def stop_living_playlist(self, living_id: str) -> dict[str, Any] | None:
        """Stop a living playlist (the Spotify playlist stays the listener's)."""
        return self._request(
            "DELETE",
            f"{SPOTIFY_PREFIX}/living-playlists/{quote(living_id, safe='')}",
            expect=(200, 202, 204),
        )

    def recommendations(
        self,
        seeds: list[str],
        limit: int,
        max_popularity: int | None,
        max_per_artist: int,
    ) -> dict[str, Any]:
        """Songs by emerging artists that sound like ``seeds``, nearest first."""
        body: dict[str, Any] = {
            "seeds": seeds,
            "limit": limit,
            "max_per_artist": max_per_artist,
            "exclude_ids": seeds,
        }
        if max_popularity is not None:
            body["max_popularity"] = max_popularity
        return self._request("POST", RECOMMENDATIONS_PATH, json=body)

    def catalog(self) -> dict[str, Any]:
        """Song count, last update, model version and speed-layer freshness."""
        return self._request("GET", "/api/v1/catalog")

    def model(self) -> dict[str, Any] | None:
        """The current model, or None before the first one is trained."""
        try:
            return self._request("GET", "/api/v1/model")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def clusters(self, sample: int) -> dict[str, Any] | None:
        """Songs in the model's PCA plane, or None before the first model."""
        try:
            return self._request("GET", "/api/v1/clusters", params={"sample": sample})
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def upload_csv(
        self,
        filename: str,
        data: bytes,
        on_progress: Callable[[int, int], None] | None = None,
        write_key: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV (multipart field ``file``); ``{upload_id, accepted, rejected}``.

        ``write_key``: the viewer's own catalog:write key, sent instead of the dashboard's.
        """
        reader = _CountingReader(data, on_progress or (lambda done, total: None))
        return self._request(
            "POST",
            UPLOAD_PATH,
            expect=(200, 202),
            files={"file": (filename, reader, "text/csv")},
            timeout=self._upload_timeout,
            headers={"X-API-Key": write_key} if write_key else None,
        )
