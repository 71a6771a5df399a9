"""Spotify tokens at rest: encrypted with Fernet, one row per listener, refreshed in time.

Access and refresh tokens never leave this module in clear except to call Spotify: they are not
logged, not returned by any endpoint and not sent to the browser.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from spotipy.cache_handler import CacheHandler
from spotipy.oauth2 import SpotifyOAuth
from sqlalchemy.engine import Engine

from emergify_contracts.spotify_tables import spotify_tokens

#: Refresh when less than this is left (spotipy's own threshold, kept explicit here).
REFRESH_MARGIN_SECONDS = 60


class TokenCipher:
    """Fernet encryption; several keys allow rotation (the first encrypts, any decrypts)."""

    def __init__(self, keys: str) -> None:
        self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys.split(",")])

    def encrypt(self, text: str) -> str:
        """Ciphertext of ``text`` (ASCII, safe for a Text column)."""
        return self._fernet.encrypt(text.encode()).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        """The clear text; raises :class:`cryptography.fernet.InvalidToken` for a wrong key."""
        return self._fernet.decrypt(ciphertext.encode("ascii")).decode()


class TokenStore:
    """The ``spotify_tokens`` table, in spotipy's ``token_info`` vocabulary."""

    def __init__(self, engine: Engine, cipher: TokenCipher) -> None:
        self.engine = engine
        self.cipher = cipher

    def save(self, listener_id: str, token_info: dict[str, Any]) -> None:
        """Insert or replace the listener's tokens (``access_token``, ``refresh_token``,
        ``expires_at``, ``scope``)."""
        now = int(time.time())
        values = {
            "refresh_token": self.cipher.encrypt(token_info["refresh_token"]),
            "access_token": self.cipher.encrypt(token_info["access_token"]),
            "expires_at": int(token_info["expires_at"]),
            "scopes": token_info.get("scope") or "",
            "updated_at": now,
        }
        with self.engine.begin() as conn:
            updated = conn.execute(
                spotify_tokens.update()
                .where(spotify_tokens.c.listener_id == listener_id)
                .values(**values)
            ).rowcount
            if not updated:
                conn.execute(
                    spotify_tokens.insert().values(
                        listener_id=listener_id, created_at=now, **values
                    )
                )

    def load(self, listener_id: str) -> dict[str, Any] | None:
        """The listener's ``token_info``, or None when they are not signed in (or the key that
        encrypted their tokens is gone, which means the same: sign in again)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(spotify_tokens).where(spotify_tokens.c.listener_id == listener_id)
            ).first()
        if row is None:
            return None
        try:
            return {
                "access_token": self.cipher.decrypt(row.access_token),
                "refresh_token": self.cipher.decrypt(row.refresh_token),
                "expires_at": row.expires_at,
                "expires_in": max(0, row.expires_at - int(time.time())),
                "scope": row.scopes,
                "token_type": "Bearer",
            }
        except InvalidToken:
            return None

    def delete(self, listener_id: str) -> bool:
        """Forget the listener's tokens; whether there were any."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    spotify_tokens.delete().where(spotify_tokens.c.listener_id == listener_id)
                ).rowcount
            )


class ListenerCacheHandler(CacheHandler):
    """spotipy's token cache for one listener, backed by the encrypted table (never a file)."""

    def __init__(self, store: TokenStore, listener_id: str) -> None:
        self.store = store
        self.listener_id = listener_id

    def get_cached_token(self) -> dict[str, Any] | None:
        return self.store.load(self.listener_id)

    def save_token_to_cache(self, token_info: dict[str, Any]) -> None:
        self.store.save(self.listener_id, token_info)


class NotSignedInError(Exception):
    """The listener has no (usable) tokens: they must sign in with Spotify again."""


# One lock per listener: two requests refreshing at once would each spend the same refresh
# token, and Spotify may retire it after the first use.
_refresh_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _lock_for(listener_id: str) -> threading.Lock:
    with _locks_guard:
        return _refresh_locks.setdefault(listener_id, threading.Lock())


class StoredTokenAuth(SpotifyOAuth):
    """spotipy's authorization-code manager, but never interactive: the tokens come from our
    store, are refreshed when less than a minute is left, and a missing token means "sign in"."""

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        accounts_url: str,
        cache_handler: ListenerCacheHandler,
        timeout: float,
    ) -> None:
        super().__init__(
            client_id=client_id,
            client_secret=client_secret,
            redirect_uri=redirect_uri,
            cache_handler=cache_handler,
            open_browser=False,
            requests_timeout=timeout,
        )
        # spotipy has accounts.spotify.com as a class constant; the sandbox needs another.
        self.OAUTH_TOKEN_URL = f"{accounts_url.rstrip('/')}/api/token"
        self.OAUTH_AUTHORIZE_URL = f"{accounts_url.rstrip('/')}/authorize"
        self.listener_cache = cache_handler
        self.last_access_token: str | None = None  # what the last call sent, for refresh()

    def get_access_token(  # type: ignore[override]
        self, code: str | None = None, as_dict: bool = False, check_cache: bool = True
    ) -> str:
        """A valid access token for the listener, refreshed first if it is about to expire."""
        del code, check_cache
        token_info = self.listener_cache.get_cached_token()
        if token_info is None:
            raise NotSignedInError
        if token_info["expires_at"] - time.time() < REFRESH_MARGIN_SECONDS:
            token_info = self.refresh(stale_access_token=token_info["access_token"])
        self.last_access_token = token_info["access_token"]
        return token_info if as_dict else token_info["access_token"]

    def refresh(self, stale_access_token: str | None = None) -> dict[str, Any]:
        """Refresh the listener's tokens, unless another request already did since
        ``stale_access_token`` was read."""
        with _lock_for(self.listener_cache.listener_id):
            current = self.listener_cache.get_cached_token()
            if current is None:
                raise NotSignedInError
            fresh_enough = current["expires_at"] - time.time() >= REFRESH_MARGIN_SECONDS
            if current["access_token"] != stale_access_token and fresh_enough:
                return current
            # Keep the granted scopes (spotipy would overwrite them with its own, here None).
            self.scope = current.get("scope") or None
            return self.refresh_access_token(current["refresh_token"])

    def _add_custom_values_to_token_info(self, token_info: dict[str, Any]) -> dict[str, Any]:
        token_info["expires_at"] = int(time.time()) + int(token_info["expires_in"])
        token_info["scope"] = token_info.get("scope") or self.scope or ""
        return token_info
