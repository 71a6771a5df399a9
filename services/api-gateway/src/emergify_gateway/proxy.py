"""Forwarding a request to its upstream service and streaming the answer back.

Bodies stream both ways (a large CSV never sits whole in the gateway), hop-by-hop headers are
dropped, and transport failures become problems: 503 (service unreachable, or gone before
answering, with ``Retry-After``), 504 (no answer in time), 502 (the answer broke off).
Upstream answers, problem documents included, pass through unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx
import structlog
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse

from emergify_contracts.problems import ProblemError
from emergify_gateway.config import Settings
from emergify_gateway.request_context import REQUEST_ID_HEADER
from emergify_gateway.routes import Route, service_urls
from emergify_gateway.security import API_KEY_HEADER, PRINCIPAL_HEADER, Principal

# RFC 9110 §7.6.1: meaningful for one connection only, never forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway itself, or secrets upstreams have no use for (they trust the gateway).
_NOT_FORWARDED = HOP_BY_HOP | {
    "host",
    "expect",
    API_KEY_HEADER.lower(),
    "authorization",
    REQUEST_ID_HEADER.lower(),
    PRINCIPAL_HEADER.lower(),
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
}
_NOT_RETURNED = HOP_BY_HOP | {REQUEST_ID_HEADER.lower()}
_RETRYABLE_METHODS = frozenset({"GET", "HEAD"})
UNAVAILABLE_RETRY_AFTER_SECONDS = 5

log = structlog.get_logger()


class BodyTooLargeError(Exception):
    """The request body grew past the gateway's limit while it streamed."""


#: How long an idle upstream connection is reused: well under uvicorn's keep-alive (5 s), so
#: the gateway never reuses a connection the upstream is closing at that moment (the request
#: would fail with a read or write error: a spurious 502/503).
UPSTREAM_KEEPALIVE_SECONDS = 2.0


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """The one HTTP client every upstream call shares (connection pooling, no redirects)."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            settings.upstream_timeout_seconds,
            connect=settings.connect_timeout_seconds,
            # A full pool means the gateway is overloaded: say so quickly (503) instead of queueing.
            pool=settings.connect_timeout_seconds,
        ),
        limits=httpx.Limits(
            max_connections=256,
            max_keepalive_connections=64,
            keepalive_expiry=UPSTREAM_KEEPALIVE_SECONDS,
        ),
        follow_redirects=False,
        trust_env=False,  # Upstreams are addressed directly, never through an HTTP proxy.
        # The client is shared by every caller: it must never keep an upstream's Set-Cookie
        # and replay it for someone else (a listener's session leaking to an API-key caller).
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
    )


def check_declared_size(request: Request, limit: int) -> None:
    """Refuse (413) a body whose Content-Length is over ``limit`` before reading any of it."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ProblemError(413, _too_large_detail(limit), max_bytes=limit)


class Proxy:
    """Forwards requests to the upstream services named in the routing table."""

    def __init__(self, client: httpx.AsyncClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.urls = service_urls(settings)

    async def forward(
        self, request: Request, route: Route, principal: Principal | None
    ) -> Response:
        """Send ``request`` to ``route``'s service; stream the answer back."""
        limit = self.settings.max_upload_bytes if route.upload else self.settings.max_json_bytes
        check_declared_size(request, limit)
        service = route.service
        if route.upload:
            content: AsyncIterator[bytes] | bytes | None = self._body(request, limit)
        else:
            # Small JSON bodies are read whole first: an upstream connection is taken only for
            # a complete body within the limit, never held open by a slow or oversized one.
            content = await _read_small(request, limit)
        upstream_request = self.client.build_request(
            request.method,
            self._upstream_url(request, route),
            headers=self._upstream_headers(request, principal),
            content=content,
            timeout=self._timeout(route),
        )
        try:
            upstream = await self._send(upstream_request)
        except BodyTooLargeError:
            raise ProblemError(413, _too_large_detail(limit), max_bytes=limit) from None
        except ClientDisconnect:
            raise ProblemError(
                400, "the client closed the connection before the whole body arrived"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            log.warning("upstream unavailable", service=service, error=repr(exc))
            raise _unavailable(service, "is unavailable") from None
        except (httpx.ReadError, httpx.RemoteProtocolError) as exc:
            if not _went_away(exc):
                log.warning("upstream failed", service=service, error=repr(exc))
                raise ProblemError(
                    502, f"{service} answered with a broken response", service=service
                ) from None
            # Killed or restarted while handling the request: as unavailable as a closed port.
            log.warning("upstream went away mid-request", service=service, error=repr(exc))
            raise _unavailable(service, "went away before answering") from None
        except httpx.TimeoutException as exc:
            log.warning("upstream timed out", service=service, error=repr(exc))
            seconds = self._timeout(route).read
            raise ProblemError(
                504, f"{service} did not answer within {seconds:g} s", service=service
            ) from None
        except httpx.HTTPError as exc:
            log.warning("upstream failed", service=service, error=repr(exc))
            raise ProblemError(
                502, f"{service} closed the connection without a valid answer", service=service
            ) from None

        response = StreamingResponse(
            _relay(upstream, service),
            status_code=upstream.status_code,
            background=BackgroundTask(upstream.aclose),
        )
        response.raw_headers = self._returned_headers(upstream, service)
        return response

    async def _send(self, upstream_request: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(upstream_request, stream=True)
        except httpx.ConnectError:
            # Only bodiless idempotent calls are retried: a POST may have had its effect, and a
            # streamed body cannot be sent twice.
            has_body = "content-length" in upstream_request.headers and (
                upstream_request.headers["content-length"] != "0"
            )
            if (
                upstream_request.method not in _RETRYABLE_METHODS
                or has_body
                or "transfer-encoding" in upstream_request.headers
            ):
                raise
            return await self.client.send(upstream_request, stream=True)

    def _upstream_url(self, request: Request, route: Route) -> httpx.URL:
        base = httpx.URL(self.urls[route.service])
        if route.upstream_path is not None:
            path = route.upstream_path.encode()
        else:
            # The raw path keeps the client's percent-encoding exactly as sent.
            path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        raw = base.raw_path.rstrip(b"/") + path + (b"?" + query if query else b"")
        return base.copy_with(raw_path=raw)

    def _upstream_headers(
        self, request: Request, principal: Principal | None
    ) -> list[tuple[str, str]]:
        dropped = _NOT_FORWARDED | _connection_tokens(request.headers.get("connection", ""))
        # Whitespace around a value is not part of it (RFC 9110 §5.5), and the upstream
        # client refuses to send it: untrimmed, the caller's header would become a 502.
        headers = [(k, v.strip(" \t")) for k, v in request.headers.items() if k not in dropped]
        headers.append((REQUEST_ID_HEADER, request.state.request_id))
        if request.client is not None:
            headers.append(("X-Forwarded-For", request.client.host))
        headers.append(("X-Forwarded-Proto", request.url.scheme))
        if host := request.headers.get("host"):
            headers.append(("X-Forwarded-Host", host))
        if principal is not None:
            headers.append((PRINCIPAL_HEADER, principal.key_id))
        return headers

    def _body(self, request: Request, limit: int) -> AsyncIterator[bytes] | None:
        if not _has_body(request):
            return None
        return _limited(request.stream(), limit)

    def _timeout(self, route: Route) -> httpx.Timeout:
        seconds = (
            self.settings.upload_timeout_seconds
            if route.upload
            else self.settings.upstream_timeout_seconds
        )
        return httpx.Timeout(
            seconds,
            connect=self.settings.connect_timeout_seconds,
            pool=self.settings.connect_timeout_seconds,
        )

    def _returned_headers(
        self, upstream: httpx.Response, service: str
    ) -> list[tuple[bytes, bytes]]:
        dropped = _NOT_RETURNED | _connection_tokens(upstream.headers.get("connection", ""))
        base = self.urls[service]
        headers = []
        for name, value in upstream.headers.multi_items():
            if name in dropped:
                continue
            if name == "location" and value.startswith(base + "/"):
                # A redirect to the upstream's own address must stay behind the gateway.
                value = value[len(base) :]
            headers.append((name.encode("latin-1"), value.encode("latin-1")))
        return headers


def _has_body(request: Request) -> bool:
    return "transfer-encoding" in request.headers or request.headers.get(
        "content-length", "0"
    ) not in ("", "0")


async def _read_small(request: Request, limit: int) -> bytes | None:
    """The whole body of ``request`` (at most ``limit`` bytes, else a 413 problem)."""
    if not _has_body(request):
        return None
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ProblemError(413, _too_large_detail(limit), max_bytes=limit)
    except ClientDisconnect:
        raise ProblemError(
            400, "the client closed the connection before the whole body arrived"
        ) from None
    return bytes(body)


async def _limited(chunks: AsyncIterator[bytes], limit: int) -> AsyncIterator[bytes]:
    """Pass ``chunks`` on, failing once more than ``limit`` bytes went by (chunked bodies)."""
    seen = 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise BodyTooLargeError
        yield chunk


async def _relay(upstream: httpx.Response, service: str) -> AsyncIterator[bytes]:
    """The upstream body as it arrives, bytes untouched (compressed stays compressed)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # Headers are already sent: all that is left is to abort the response.
        log.warning("upstream answer broke off", service=service, error=repr(exc))
        raise


def _unavailable(service: str, what: str) -> ProblemError:
    """The 503 for an upstream that cannot answer now, with when to come back."""
    return ProblemError(
        503,
        f"{service} {what}; try again in a few seconds",
        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_SECONDS)},
        service=service,
    )


def _went_away(exc: httpx.HTTPError) -> bool:
    """Whether the upstream closed or reset the connection before sending any answer (it
    died or restarted), as opposed to sending something that is not HTTP."""
    if isinstance(exc, httpx.ReadError):
        return True
    return "disconnected without sending a response" in str(exc).lower()


def _connection_tokens(connection: str) -> frozenset[str]:
    return frozenset(t.strip().lower() for t in connection.split(",") if t.strip())


def _too_large_detail(limit: int) -> str:
    return (
        f"the request body is larger than this route's limit of {limit} bytes "
        f"({limit / 1024:g} KiB); uploads take up to max_upload_bytes (split a larger file), "
        "other requests are small JSON documents"
    )
