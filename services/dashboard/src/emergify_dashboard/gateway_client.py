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

import httpx

from emergify_contracts.session import SESSION_COOKIE

SPOTIFY_PREFIX = "/api/v1/spotify"


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
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.public_url = (public_url or base_url).rstrip("/")
        self.session_cookie = session_cookie
        self._upload_timeout = upload_timeout
        headers = {"Accept": "application/json"}
        if api_key:
            headers["X-API-Key"] = api_key
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
        if path.startswith(SPOTIFY_PREFIX) and self.session_cookie:
            # Only the session cookie goes out, and only to the Spotify routes.
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
        key = hashlib.sha256(
            json.dumps([self.session_cookie, body], sort_keys=True).encode()
        ).hexdigest()
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
        return self._request("POST", "/api/v1/recommendations", json=body)

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
    ) -> dict[str, Any]:
        """Upload a CSV (multipart field ``file``); ``{upload_id, accepted, rejected}``."""
        reader = _CountingReader(data, on_progress or (lambda done, total: None))
        return self._request(
            "POST",
            "/api/v1/songs/upload",
            expect=(200, 202),
            files={"file": (filename, reader, "text/csv")},
            timeout=self._upload_timeout,
        )
