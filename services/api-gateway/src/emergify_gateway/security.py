"""Who is calling, and may they: scoped API keys, the bootstrap keys and the session hook.

Keys arrive as ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Three kinds exist:
scoped keys from the key file (``emk_<id>_<secret>``, see :mod:`emergify_gateway.keystore`),
the bootstrap admin key ``EMERGIFY_ADMIN_API_KEY`` (scope ``admin``) and the older
``EMERGIFY_READ_API_KEYS`` (scope ``recs:read``). Only a key *id* ever reaches logs or upstream
services; the keys themselves stay here.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request

from emergify_contracts import session
from emergify_contracts.problems import ProblemError
from emergify_gateway.config import Settings
from emergify_gateway.keystore import KeyStore
from emergify_gateway.routes import Access, grants
from emergify_gateway.session_revocation import RevokedSessions

API_KEY_HEADER = "X-API-Key"
# Tells upstreams who called (a key id, never a key); clients cannot set it themselves.
PRINCIPAL_HEADER = "X-Emergify-Principal"
_CHALLENGE = 'Bearer realm="emergify"'


class AuthNotConfiguredError(RuntimeError):
    """The gateway has no admin key and was not told to run without one."""


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    kind: Literal["admin", "reader", "key", "session", "anonymous"]
    key_id: str  # safe to log: "admin", "reader-<hash prefix>", a key file id, ...
    scopes: frozenset[Access]
    # Requests per minute for this caller; None: the gateway's default, 0: not limited.
    rate_per_minute: int | None = None

    def may(self, needed: Access) -> bool:
        """Whether this caller holds the scope ``needed`` (``admin`` implies every scope)."""
        return grants(self.scopes, needed)


ADMIN_SCOPES = frozenset({Access.ADMIN})
READ_SCOPES = frozenset({Access.READ})


class KeyRing:
    """The configured keys: the key file's, compared by hash, and the environment's."""

    def __init__(
        self,
        admin_key: str | None,
        read_keys: list[str],
        allow_no_auth: bool,
        session_secrets: list[str] | None = None,
        store: KeyStore | None = None,
        admin_rate_per_minute: int | None = None,
    ) -> None:
        self.store = store
        self.admin_rate_per_minute = admin_rate_per_minute
        self._admin = admin_key.encode() if admin_key else None
        # Verifies the spotify-gateway's session cookies; None: sessions are not accepted.
        self.session_secrets = session_secrets or []
        self.revoked_sessions: RevokedSessions | None = None
        self._readers = [
            (key.encode(), f"reader-{hashlib.sha256(key.encode()).hexdigest()[:8]}")
            for key in read_keys
        ]
        # Without an admin key (and only then) allow_no_auth makes every caller an admin.
        self.open = admin_key is None and allow_no_auth

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """The key ring of ``settings``; refuses a gateway without an admin key."""
        admin = settings.admin_key()
        if admin is None and not settings.allow_no_auth:
            raise AuthNotConfiguredError(
                "EMERGIFY_ADMIN_API_KEY is not set, so nobody could upload songs or retrain the "
                "model. Set it (in .env or the environment; `emergify up` generates one), or set "
                "EMERGIFY_ALLOW_NO_AUTH=true to run an open gateway for local experiments."
            )
        ring = cls(
            admin,
            settings.read_keys(),
            settings.allow_no_auth,
            settings.session_secrets(),
            KeyStore(settings.api_keys_file),
            settings.admin_rate_limit_per_minute,
        )
        ring.revoked_sessions = RevokedSessions(settings.revoked_sessions_file)
        return ring

    def identify(self, key: str) -> Principal | None:
        """The principal a presented key belongs to, or None if it is not a valid key."""
        if self.store is not None and (record := self.store.lookup(key)) is not None:
            return Principal("key", record.id, record.scopes, record.rate_per_minute)
        presented = key.encode()
        # Compare against every key, not stopping at the first match, so timing tells nothing.
        found: Principal | None = None
        if self._admin is not None and hmac.compare_digest(presented, self._admin):
            found = Principal("admin", "admin", ADMIN_SCOPES, self.admin_rate_per_minute)
        for reader, key_id in self._readers:
            if hmac.compare_digest(presented, reader) and found is None:
                found = Principal("reader", key_id, READ_SCOPES)
        return found


def presented_key(request: Request) -> str | None:
    """The API key the request carries (X-API-Key first, then a Bearer token), if any."""
    key = request.headers.get(API_KEY_HEADER)
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def session_cookie(request: Request, keys: KeyRing) -> tuple[str, str] | None:
    """``(cookie, listener id)`` of a genuine, unexpired, not signed-out session cookie."""
    if not keys.session_secrets:
        return None
    cookie = request.cookies.get(session.SESSION_COOKIE)
    listener = session.verify(cookie, keys.session_secrets)
    if cookie is None or listener is None:
        return None
    if keys.revoked_sessions is not None and keys.revoked_sessions.is_revoked(cookie):
        return None
    return cookie, listener


def session_principal(request: Request, keys: KeyRing) -> Principal | None:
    """The listener signed in with Spotify, from the spotify-gateway's signed session cookie.

    A session may read (including the listener's own /api/v1/spotify routes and playlist
    export, which the routing table marks READ) but never write to the catalog or the model.
    Only a hash of the listener id reaches logs and upstreams.
    """
    found = session_cookie(request, keys)
    if found is None:
        return None
    digest = hashlib.sha256(found[1].encode()).hexdigest()[:8]
    return Principal("session", f"listener-{digest}", READ_SCOPES)


def sign_out(request: Request, keys: KeyRing) -> None:
    """Revoke the request's session cookie, if it carries a valid one."""
    found = session_cookie(request, keys)
    if found is None or keys.revoked_sessions is None:
        return
    expiry = session.expiry_of(found[0])
    assert expiry is not None  # verified above
    keys.revoked_sessions.revoke(found[0], expiry)


def resolve_principal(request: Request, keys: KeyRing) -> Principal | None:
    """Who is calling: a key holder, a signed-in listener, everyone (open gateway) or nobody.

    Raises a 401 problem when a key is presented but is not valid, so a typo is reported as
    such instead of as a missing key.
    """
    key = presented_key(request)
    if key is not None:
        principal = keys.identify(key)
        if principal is None and not keys.open:
            raise ProblemError(
                401,
                "the API key is not valid (unknown, revoked or past its rotation grace period); "
                "check it, or ask an admin for a key (`emergify keys create`)",
                headers={"WWW-Authenticate": f'{_CHALLENGE}, error="invalid_token"'},
            )
        if principal is not None:
            return principal
    if keys.open:
        return Principal("anonymous", "anonymous", ADMIN_SCOPES)
    return session_principal(request, keys)


def require(needed: Access, principal: Principal | None, method: str, path: str) -> None:
    """Raise a 401/403 problem unless ``principal`` holds the scope ``needed``."""
    if needed is Access.PUBLIC:
        return
    if principal is None:
        raise ProblemError(
            401,
            f"{method} {path} needs an API key (send it as '{API_KEY_HEADER}: <key>' "
            "or 'Authorization: Bearer <key>') or a Spotify sign-in session "
            "(GET /api/v1/spotify/login)",
            headers={"WWW-Authenticate": _CHALLENGE},
        )
    if not principal.may(needed):
        names = ", ".join(sorted(scope.value for scope in principal.scopes)) or "no scope"
        held = f"is read-only ({names})" if principal.scopes == READ_SCOPES else f"has {names}"
        raise ProblemError(
            403,
            f"{method} {path} needs the scope {needed.value!r} (or 'admin'); this caller "
            f"{held}. Ask an admin for a key with that scope (`emergify keys create --scope "
            f"{needed.value}`)",
            missing_scope=needed.value,
        )
