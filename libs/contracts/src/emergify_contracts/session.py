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
import re
import time
from collections.abc import Sequence

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

    session_previous_secrets: SecretStr | None = Field(
        None,
        description="Comma-separated secrets that signed sessions before the current one: "
        "their cookies are still accepted (rotation), new ones are signed with session_secret.",
    )

    @field_validator("session_secret", "session_previous_secrets")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() in ("", PLACEHOLDER):
            return None
        for secret in value.get_secret_value().split(","):
            if len(secret.strip()) < MIN_SECRET_LENGTH:
                raise ValueError(
                    f"each session secret must be at least {MIN_SECRET_LENGTH} characters; "
                    'generate one with python -c "import secrets; '
                    'print(secrets.token_urlsafe(32))"'
                )
        return value

    def session_secrets(self) -> list[str]:
        """Every secret a cookie may be signed with, the signing one first; [] when unset."""
        if self.session_secret is None:
            return []
        previous = self.session_previous_secrets
        older = previous.get_secret_value().split(",") if previous is not None else []
        return [self.session_secret.get_secret_value(), *(s.strip() for s in older)]


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


#: An expiry is ASCII digits, at most 15 of them (str.isdigit() also takes "²" and "٣", and
#: int() refuses thousands of digits: either would be an error, not a refusal).
_EXPIRY = re.compile(r"[0-9]{1,15}")


def verify(value: str | None, secret: str | Sequence[str], now: float | None = None) -> str | None:
    """The listener id of a genuine, unexpired session cookie value; None for anything else.

    ``secret`` may be several secrets (rotation): a cookie signed with any of them is genuine.
    """
    secrets = [secret] if isinstance(secret, str) else list(secret)
    if not value or not any(secrets) or len(value) > 4096:
        return None
    parts = value.split(".")
    if len(parts) != 3 or not _EXPIRY.fullmatch(parts[1]):
        return None
    try:
        listener_id = _unb64(parts[0]).decode()
        presented = _unb64(parts[2])
    except (ValueError, UnicodeError):
        return None
    expiry = int(parts[1])
    genuine = False
    for key in secrets:  # every one is compared, so timing does not tell which matched
        if key and hmac.compare_digest(presented, _signature(listener_id, expiry, key)):
            genuine = True
    if not genuine or expiry <= (now if now is not None else time.time()) or not listener_id:
        return None
    return listener_id


def expiry_of(value: str) -> int | None:
    """The expiry (unix seconds) a cookie value claims; check it with :func:`verify` first."""
    parts = value.split(".")
    return int(parts[1]) if len(parts) == 3 and _EXPIRY.fullmatch(parts[1]) else None
