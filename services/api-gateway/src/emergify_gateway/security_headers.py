"""Security headers on every gateway response: proxied answers, problems, 404s and preflights.

API responses get the strictest Content-Security-Policy (they are JSON, never a page to
render); the Swagger UI page at ``/docs`` sets its own policy that allows exactly the files it
loads, all served by the gateway (:func:`docs_content_security_policy`). Responses to callers
that presented credentials are never cached; Strict-Transport-Security is sent on https
requests (or always, when the ``force_hsts`` setting says TLS ends in front of the gateway).
"""

from __future__ import annotations

import base64
import hashlib
import re

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
STRICT_TRANSPORT_SECURITY = "max-age=31536000; includeSubDomains"
ALWAYS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
# Request headers that make a response personal: its answer must not sit in any cache.
_CREDENTIAL_HEADERS = ("authorization", "x-api-key", "cookie")
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_content_security_policy(html: str) -> str:
    """A policy for the Swagger UI page that allows exactly what it loads, all from here.

    The page loads Swagger UI's script, stylesheet and icon from the gateway itself and starts
    Swagger UI in an inline script; Swagger UI then fetches ``/openapi.json`` and "Try it out"
    calls from this origin, and draws icons as ``data:`` images. The inline script is allowed
    by its hash, so nothing else can run even if the page changes, and no other host is named.
    """
    scripts = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]
    directives = {
        "default-src": ["'none'"],
        "script-src": ["'self'", *scripts],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items())


class SecurityHeadersMiddleware:
    """Add the security headers to every response that passes through.

    A response that already names a Content-Security-Policy (the ``/docs`` page) keeps it.
    """

    def __init__(self, app: ASGIApp, *, force_hsts: bool = False) -> None:
        self.app = app
        self.force_hsts = force_hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers = Headers(scope=scope)
        personal = any(name in request_headers for name in _CREDENTIAL_HEADERS)
        hsts = self.force_hsts or scope.get("scheme") == "https"

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    headers[name] = value
                if "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = API_CONTENT_SECURITY_POLICY
                if personal or scope.get("state", {}).get("key_id"):
                    headers["Cache-Control"] = "no-store"
                if hsts:
                    headers["Strict-Transport-Security"] = STRICT_TRANSPORT_SECURITY
            await send(message)

        await self.app(scope, receive, send_with_headers)
