"""The listener's session cookie, which the api-gateway and the spotify-gateway both verify.

A session is ``<listener id, base64url>.<expiry, unix seconds>.<signature, base64url>`` where
the signature is HMAC-SHA256 over ``"<listener id>|<expiry>"`` with ``EMERGIFY_SESSION_SECRET``.
The cookie carries no token and nothing secret: only who signed in, until when, and proof that
Emergify issued it. Standard library only, so every service can verify it cheaply.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from pydantic import Field, SecretStr, field_validator

from emergify_contracts.settings import EmergifySettings

#: Name of the cookie the spotify-gateway sets after a successful Spotify sign-in.
SESSION_COOKIE = "emergify_session"
#: Shortest secret accepted: 32 bytes of entropy (``secrets.token_urlsafe(32)``: 43 chars).
MIN_SECRET_LENGTH = 32
#: What ``.env.example`` holds until `emergify up` replaces it; it counts as "not set".
PLACEHOLDER = "generated-on-first-run"


class SessionSettings(EmergifySettings):
    """Settings of the session cookie (the api-gateway and the spotify-gateway share them)."""

    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs session cookies (HMAC-SHA256); `emergify up` generates one. "
        "Without it nobody can sign in.",
    )
    session_max_age_seconds: int = Field(
        7 * 24 * 3600, gt=0, description="How long a sign-in lasts before the listener re-signs."
    )

    @field_validator("session_secret")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() in ("", PLACEHOLDER):
            return None
        if len(value.get_secret_value()) < MIN_SECRET_LENGTH:
            raise ValueError(
                f"EMERGIFY_SESSION_SECRET must be at least {MIN_SECRET_LENGTH} characters; "
                'generate one with python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        return value


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(listener_id: str, expiry: int, secret: str) -> bytes:
    message = f"{listener_id}|{expiry}".encode()
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def sign(listener_id: str, secret: str, max_age_seconds: int, now: float | None = None) -> str:
    """The cookie value of a session for ``listener_id`` that ends ``max_age_seconds`` from now."""
    expiry = int(now if now is not None else time.time()) + max_age_seconds
    signature = _signature(listener_id, expiry, secret)
    return f"{_b64(listener_id.encode())}.{expiry}.{_b64(signature)}"


def verify(value: str | None, secret: str, now: float | None = None) -> str | None:
    """The listener id of a genuine, unexpired session cookie value; None for anything else."""
    if not value or not secret:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    try:
        listener_id = _unb64(parts[0]).decode()
        presented = _unb64(parts[2])
    except (ValueError, UnicodeDecodeError):
        return None
    expiry = int(parts[1])
    if not hmac.compare_digest(presented, _signature(listener_id, expiry, secret)):
        return None
    if expiry <= (now if now is not None else time.time()) or not listener_id:
        return None
    return listener_id
