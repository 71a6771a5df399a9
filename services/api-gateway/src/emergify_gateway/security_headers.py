"""Security headers on every gateway response: proxied answers, problems, 404s and preflights.

API responses get the strictest Content-Security-Policy (they are JSON, never a page to
render); the Swagger UI page at ``/docs`` sets its own policy that allows exactly the files it
loads (:func:`docs_content_security_policy`). Responses to callers that presented credentials
are never cached; Strict-Transport-Security is sent on https requests (or always, when the
``force_hsts`` setting says TLS ends in front of the gateway).
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
_EXTERNAL = re.compile(r"""<(?:script|link)\b[^>]*?(?:src|href)="(https://[^"]+)"[^>]*>""")


def docs_content_security_policy(html: str) -> str:
    """A policy for a Swagger UI page that allows exactly the files and inline scripts in it.

    FastAPI's page loads one script and one stylesheet from cdn.jsdelivr.net, a favicon from
    fastapi.tiangolo.com, and starts Swagger UI in an inline script; Swagger UI then fetches
    ``/openapi.json`` and "Try it out" calls from this origin, and draws icons as ``data:``
    images. Each external file is allowed by its full URL and each inline script by its hash,
    so nothing else can run even if the page changes.
    """
    scripts = [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]
    urls = _EXTERNAL.findall(html)
    script_urls = [u for u in urls if u.endswith(".js")]
    style_urls = [u for u in urls if u.endswith(".css")]
    image_urls = [u for u in urls if u not in script_urls and u not in style_urls]
    directives = {
        "default-src": ["'none'"],
        "script-src": [*script_urls, *scripts],
        "style-src": style_urls,
        "img-src": ["'self'", "data:", *image_urls],
        "connect-src": ["'self'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
    return "; ".join(f"{name} {' '.join(values)}" for name, values in directives.items() if values)


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
