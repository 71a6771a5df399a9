"""Service-to-service authentication and Host checks, the same way in every service.

Loopback is not a boundary: any local user, and any web page in the user's browser (a
no-cors form post, or a DNS-rebinding name that resolves to 127.0.0.1), can reach a port on
127.0.0.1. So every internal service (ingest, the stream processor's admin app, the
recommender, the spotify-gateway) answers only requests that carry the shared internal
credential (``EMERGIFY_INTERNAL_TOKEN``, sent as :data:`INTERNAL_TOKEN_HEADER`), and every
service, the gateway included, answers only requests whose ``Host`` names it.

Only :data:`LIVENESS_PATH` answers without the credential: an orchestrator's liveness probe
has no secret to send, and the path says nothing but "the process is up".
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlparse

from fastapi import FastAPI
from pydantic import SecretStr
from starlette.types import ASGIApp, Receive, Scope, Send

from emergify_contracts.problems import problem_response
from emergify_contracts.settings import EmergifySettings

#: The header that carries the internal credential from the gateway (and the CLI, tests) to
#: the internal services. Never logged: the log redaction treats every "*token*" key as secret.
INTERNAL_TOKEN_HEADER = "X-Emergify-Internal-Token"
#: Sent by the dashboard with its own key: an opaque id per browser session, so the gateway
#: gives each viewer a rate-limit bucket of its own. Ignored from every other caller.
VIEWER_HEADER = "X-Emergify-Viewer"
#: The one path an internal service answers without the credential (process liveness only).
LIVENESS_PATH = "/livez"
#: Shortest internal token accepted: 32 bytes of entropy (``secrets.token_urlsafe(32)``).
MIN_INTERNAL_TOKEN_LENGTH = 32
#: Host names every service answers besides its own URL's: the loopback names an operator
#: or an orchestrator's probe on the same machine uses.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_PLACEHOLDER = "generated-on-first-run"


class InternalAuthNotConfiguredError(RuntimeError):
    """An internal service was asked to start without a usable internal token."""


def internal_token(settings: EmergifySettings) -> str:
    """The configured internal token; raises when it is unset, the placeholder or too short,
    so an internal service never starts open."""
    secret: SecretStr | None = settings.internal_token
    value = secret.get_secret_value().strip() if secret is not None else ""
    if not value or value == _PLACEHOLDER:
        raise InternalAuthNotConfiguredError(
            "EMERGIFY_INTERNAL_TOKEN is not set: internal services refuse every request "
            "without it. `make up` generates one into .env; elsewhere set the same value on "
            "every service."
        )
    if len(value) < MIN_INTERNAL_TOKEN_LENGTH:
        raise InternalAuthNotConfiguredError(
            f"EMERGIFY_INTERNAL_TOKEN must be at least {MIN_INTERNAL_TOKEN_LENGTH} characters; "
            'generate one with python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )
    return value


def internal_headers(settings: EmergifySettings) -> dict[str, str]:
    """Headers a caller of an internal service sends (empty when no token is configured,
    so the caller gets the service's clear 401 instead of failing on its own)."""
    try:
        return {INTERNAL_TOKEN_HEADER: internal_token(settings)}
    except InternalAuthNotConfiguredError:
        return {}


def allowed_hosts(settings: EmergifySettings, own_url: str) -> frozenset[str]:
    """The Host names a service answers: its own URL's host, the loopback names and
    ``EMERGIFY_ALLOWED_HOSTS`` (comma-separated; ``*`` turns the check off)."""
    names = set(LOOPBACK_HOSTS)
    if host := urlparse(own_url).hostname:
        names.add(host.lower())
    names |= {name.strip().lower() for name in settings.allowed_hosts.split(",") if name.strip()}
    return frozenset(names)


def _host_name(raw: str) -> str:
    """``Host`` without its port, lower-cased; IPv6 literals lose their brackets."""
    raw = raw.strip().lower()
    if raw.startswith("["):
        return raw[1 : raw.find("]")] if "]" in raw else raw
    return raw.rsplit(":", 1)[0] if raw.count(":") == 1 else raw


class HostCheckMiddleware:
    """Refuse (421, problem+json) a request whose ``Host`` is not one of ``allowed``: a
    DNS-rebinding page reaches 127.0.0.1 under its own name, and that name is refused."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = frozenset(allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or "*" in self.allowed:
            await self.app(scope, receive, send)
            return
        host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), "")
        if _host_name(host) in self.allowed:
            await self.app(scope, receive, send)
            return
        response = problem_response(
            421,
            f"this service does not answer to the host name {host[:100]!r}; "
            "call it by a configured name (EMERGIFY_ALLOWED_HOSTS)",
            title="Misdirected request",
            instance=scope.get("path"),
        )
        await response(scope, receive, send)


class InternalAuthMiddleware:
    """Refuse (401, problem+json) a request without the internal credential; compared in
    constant time, never logged. :data:`LIVENESS_PATH` is the one exception."""

    def __init__(self, app: ASGIApp, token: str, open_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.token = token.encode()
        self.open_paths = frozenset({LIVENESS_PATH, *open_paths})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        header = INTERNAL_TOKEN_HEADER.lower().encode()
        sent = next((v for k, v in scope["headers"] if k == header), b"")
        if hmac.compare_digest(sent, self.token):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # policy violation
            return
        detail = (
            "this is an internal Emergify service: call it through the API gateway"
            if not sent
            else "the internal credential is wrong; every service needs the same "
            "EMERGIFY_INTERNAL_TOKEN"
        )
        response = problem_response(
            401,
            detail,
            title="Internal credential required",
            instance=scope["path"],
            headers={"WWW-Authenticate": f'{INTERNAL_TOKEN_HEADER} realm="emergify-internal"'},
        )
        await response(scope, receive, send)


def guard_internal_service(app: FastAPI, settings: EmergifySettings, own_url: str) -> None:
    """Make ``app`` an internal service: a liveness route, the credential check and the Host
    check (outermost, so a rebinding page learns nothing, not even the 401).

    Raises :class:`InternalAuthNotConfiguredError` when no usable token is configured.
    """
    token = internal_token(settings)

    @app.get(LIVENESS_PATH, tags=["health"], include_in_schema=False)
    async def liveness() -> dict[str, Any]:
        return {"status": "up"}

    app.add_middleware(InternalAuthMiddleware, token=token)
    app.add_middleware(HostCheckMiddleware, allowed=allowed_hosts(settings, own_url))


def guard_public_service(app: FastAPI, settings: EmergifySettings, own_url: str) -> None:
    """The Host check alone, for the gateway (its callers authenticate with API keys)."""
    app.add_middleware(HostCheckMiddleware, allowed=allowed_hosts(settings, own_url))


__all__ = [
    "INTERNAL_TOKEN_HEADER",
    "LIVENESS_PATH",
    "MIN_INTERNAL_TOKEN_LENGTH",
    "VIEWER_HEADER",
    "HostCheckMiddleware",
    "InternalAuthMiddleware",
    "InternalAuthNotConfiguredError",
    "allowed_hosts",
    "guard_internal_service",
    "guard_public_service",
    "internal_headers",
    "internal_token",
]
