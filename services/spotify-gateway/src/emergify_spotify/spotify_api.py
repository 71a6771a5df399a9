"""Calling the Spotify Web API for one listener: spotipy, with our retry policy made explicit.

spotipy's own retries are off (a plain ``requests.Session``): its urllib3 ``Retry`` would sleep
through 429s invisibly and, once out of attempts, drop Spotify's ``Retry-After``. Here a 429 is
waited out for ``Retry-After`` seconds when that is at most ``max_retry_after_seconds`` (else a
503 problem carrying the Retry-After), a 401 triggers one token refresh, and every other Spotify
error becomes a problem that quotes Spotify's message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import spotipy
import structlog
from spotipy.exceptions import SpotifyException, SpotifyOauthError

from emergify_contracts.problems import ProblemError
from emergify_spotify.config import Settings
from emergify_spotify.tokens import (
    ListenerCacheHandler,
    NotSignedInError,
    StoredTokenAuth,
    TokenStore,
)

T = TypeVar("T")
log = structlog.get_logger()

# spotipy logs request headers (bearer tokens included) at DEBUG: never let that through.
logging.getLogger("spotipy").setLevel(logging.INFO)

SIGN_IN_AGAIN = "sign in with Spotify again: GET /api/v1/spotify/login"


def spotify_message(exc: SpotifyException) -> str:
    """Spotify's own error message (spotipy prefixes it with the URL)."""
    return str(exc.msg).rsplit(":\n", 1)[-1].strip() or f"HTTP {exc.http_status}"


def retry_after_seconds(exc: SpotifyException) -> float:
    """The wait a 429 asks for (RFC 9110 allows only delay-seconds from Spotify); 1 s if absent."""
    value = (exc.headers or {}).get("Retry-After") or (exc.headers or {}).get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


class SpotifyApi:
    """The Web API as one listener, with retries; use :meth:`call`."""

    def __init__(
        self,
        settings: Settings,
        store: TokenStore,
        listener_id: str,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        assert settings.spotify_client_id and settings.spotify_client_secret
        self.settings = settings
        self.store = store
        self.listener_id = listener_id
        self.sleep = sleep
        self.auth = StoredTokenAuth(
            client_id=settings.spotify_client_id,
            client_secret=settings.spotify_client_secret.get_secret_value(),
            redirect_uri=settings.spotify_redirect_uri,
            accounts_url=settings.spotify_accounts_url,
            cache_handler=ListenerCacheHandler(store, listener_id),
            timeout=settings.spotify_timeout_seconds,
        )
        self.client = spotipy.Spotify(
            auth_manager=self.auth,
            requests_session=requests.Session(),  # no retry adapter: see the module docstring
            requests_timeout=settings.spotify_timeout_seconds,
        )
        self.client.prefix = settings.spotify_api_url.rstrip("/") + "/"

    def call(self, operation: Callable[[spotipy.Spotify], T], what: str) -> T:
        """Run ``operation`` against Spotify; ``what`` names it in problems ("create playlist")."""
        refreshed = False
        for attempt in range(1, self.settings.spotify_max_attempts + 1):
            try:
                return operation(self.client)
            except NotSignedInError:
                raise ProblemError(
                    401, f"you are not signed in with Spotify; {SIGN_IN_AGAIN}"
                ) from None
            except SpotifyOauthError as exc:
                raise self._refresh_failed(exc) from None
            except SpotifyException as exc:
                last_attempt = attempt == self.settings.spotify_max_attempts
                if exc.http_status == 429 and not last_attempt:
                    wait = retry_after_seconds(exc)
                    if wait > self.settings.max_retry_after_seconds:
                        raise self._rate_limited(what, wait) from None
                    log.info("spotify rate limit: waiting", what=what, retry_after=wait)
                    self.sleep(wait)
                    continue
                if exc.http_status == 401 and not refreshed and not last_attempt:
                    # Spotify says the token is no longer valid (expired early, revoked):
                    # refresh once and try again.
                    refreshed = True
                    try:
                        self.auth.refresh(stale_access_token=self.auth.last_access_token)
                    except SpotifyOauthError as oauth_exc:
                        raise self._refresh_failed(oauth_exc) from None
                    except NotSignedInError:
                        raise ProblemError(401, f"you are not signed in; {SIGN_IN_AGAIN}") from None
                    continue
                raise self._problem(exc, what) from None
            except requests.Timeout:
                raise ProblemError(
                    504, f"Spotify did not answer {what} within {self.client.requests_timeout} s"
                ) from None
            except requests.RequestException as exc:
                log.warning("spotify unreachable", what=what, error=type(exc).__name__)
                raise ProblemError(
                    502, f"could not reach Spotify to {what}: {type(exc).__name__}"
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def _rate_limited(self, what: str, wait: float) -> ProblemError:
        seconds = str(max(1, int(wait + 0.999)))
        return ProblemError(
            503,
            f"Spotify is rate-limiting Emergify ({what}); try again in {seconds} s",
            title="Spotify rate limit",
            headers={"Retry-After": seconds},
            retry_after=int(seconds),
        )

    def _refresh_failed(self, exc: SpotifyOauthError) -> ProblemError:
        if exc.error in ("invalid_grant", "invalid_request"):
            # The listener revoked Emergify's access, or the refresh token was retired.
            self.store.delete(self.listener_id)
            return ProblemError(
                401, f"Spotify no longer accepts your sign-in ({exc.error}); {SIGN_IN_AGAIN}"
            )
        return ProblemError(
            502,
            f"Spotify's accounts service refused to refresh the access token: {exc.error}: "
            f"{exc.error_description}",
            spotify_error=exc.error,
        )

    def _problem(self, exc: SpotifyException, what: str) -> ProblemError:
        message = spotify_message(exc)
        status = exc.http_status
        extensions: dict[str, Any] = {"spotify_status": status, "spotify_message": message}
        if status == 401:
            return ProblemError(
                401, f"Spotify refused your token even after a refresh; {SIGN_IN_AGAIN}"
            )
        if status == 403:
            return ProblemError(
                403,
                f"Spotify refused to {what}: {message}. In development mode only users added to "
                "the app in the Spotify Developer Dashboard (at most 5) may use it.",
                **extensions,
            )
        if status == 404:
            return ProblemError(404, f"Spotify could not {what}: {message}", **extensions)
        if status == 429:
            return self._rate_limited(what, retry_after_seconds(exc))
        return ProblemError(
            502, f"Spotify failed to {what}: HTTP {status}: {message}", **extensions
        )
