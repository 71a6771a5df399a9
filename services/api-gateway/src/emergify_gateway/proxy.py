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

from emergify_contracts.internal_auth import INTERNAL_TOKEN_HEADER, internal_headers
from emergify_contracts.listener import CALLER_HEADER
from emergify_contracts.problems import ProblemError
from emergify_gateway.config import Settings
from emergify_gateway.replicas import Lease, LiveURLs, ReplicaPool
from emergify_gateway.request_context import REQUEST_ID_HEADER
from emergify_gateway.routes import Route, service_urls
from emergify_gateway.security import API_KEY_HEADER, PRINCIPAL_HEADER, VIEWER_HEADER, Principal

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
    # Only the gateway's own credential reaches an upstream, never a caller's.
    INTERNAL_TOKEN_HEADER.lower(),
    VIEWER_HEADER.lower(),
    # Who a request acts for is the gateway's word alone.
    CALLER_HEADER.lower(),
}
_NOT_RETURNED = HOP_BY_HOP | {REQUEST_ID_HEADER.lower()}
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
        # Every upstream (proxying, health, OpenAPI) is an internal service.
        headers=internal_headers(settings),
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
        self.pools = {
            name: ReplicaPool(name, urls) for name, urls in service_urls(settings).items()
        }
        self.urls = LiveURLs(self.pools)

    async def forward(
        self,
        request: Request,
        route: Route,
        principal: Principal | None,
        caller: str | None = None,
    ) -> Response:
        """Send ``request`` to a replica of ``route``'s service; stream the answer back.

        When the connection is refused or breaks before any answer, the replica is taken out
        and an idempotent request is sent once more, to another replica when there is one.
        """
        limit = self.settings.max_upload_bytes if route.upload else self.settings.max_json_bytes
        check_declared_size(request, limit)
        service = route.service
        if route.upload:
            content: AsyncIterator[bytes] | bytes | None = self._body(request, limit)
        else:
            # Small JSON bodies are read whole first: an upstream connection is taken only for
            # a complete body within the limit, never held open by a slow or oversized one.
            content = await _read_small(request, limit)
        # A streamed body (an upload) cannot be sent twice.
        attempts = 2 if request.method in route.idempotent and not route.upload else 1
        pool = self.pools[service]
        tried: frozenset[str] = frozenset()
        for attempt in range(1, attempts + 1):
            # The retry prefers another replica; with none left, the same one (a single
            # service restarting, or a stale pooled connection).
            replica = pool.pick(tried) or (pool.pick() if tried else None)
            if replica is None:
                raise _unavailable(service, "has no replica up")
            tried |= {replica.url}
            lease = pool.lease(replica)
            try:
                upstream = await self._send_once(
                    request, route, replica.url, principal, caller, content, limit
                )
            except _WentAway as failure:
                lease.release()
                pool.mark_down(replica, failure.reason)
                if attempt < attempts:
                    log.info(
                        "retrying on another replica",
                        service=service,
                        failed=replica.url,
                        reason=failure.reason,
                    )
                    continue
                raise _unavailable(service, failure.what) from None
            except BaseException:
                lease.release()
                raise
            response = StreamingResponse(
                _relay(upstream, service, lease),
                status_code=upstream.status_code,
                background=BackgroundTask(_close, upstream, lease),
            )
            response.raw_headers = self._returned_headers(upstream, replica.url)
            return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send_once(
        self,
        request: Request,
        route: Route,
        base: str,
        principal: Principal | None,
        caller: str | None,
        content: AsyncIterator[bytes] | bytes | None,
        limit: int,
    ) -> httpx.Response:
        """One attempt on the replica at ``base``; transport failures become problems, except
        those that leave the request unanswered and safe to send elsewhere (``_WentAway``)."""
        service = route.service
        upstream_request = self.client.build_request(
            request.method,
            self._upstream_url(request, route, base),
            headers=self._upstream_headers(request, principal, caller),
            content=content,
            timeout=self._timeout(route),
        )
        try:
            return await self.client.send(upstream_request, stream=True)
        except BodyTooLargeError:
            raise ProblemError(413, _too_large_detail(limit), max_bytes=limit) from None
        except ClientDisconnect:
            raise ProblemError(
                400, "the client closed the connection before the whole body arrived"
            ) from None
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            log.warning("upstream unavailable", service=service, replica=base, error=repr(exc))
            raise _WentAway("is unavailable", f"cannot connect: {type(exc).__name__}") from None
        except httpx.PoolTimeout as exc:
            # The gateway's own connection pool is full: not the replica's fault.
            log.warning("upstream pool full", service=service, error=repr(exc))
            raise _unavailable(service, "is busy") from None
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
            # An upload's write may fail because the upstream refused the body early: that is
            # not a replica that went away.
            uploading = route.upload and isinstance(exc, httpx.WriteError)
            if uploading or not _went_away(exc):
                log.warning("upstream failed", service=service, replica=base, error=repr(exc))
                raise ProblemError(
                    502, f"{service} answered with a broken response", service=service
                ) from None
            # Killed or restarted while handling the request: as unavailable as a closed port.
            log.warning(
                "upstream went away mid-request", service=service, replica=base, error=repr(exc)
            )
            raise _WentAway(
                "went away before answering", f"connection broke: {type(exc).__name__}"
            ) from None
        except httpx.TimeoutException as exc:
            log.warning("upstream timed out", service=service, replica=base, error=repr(exc))
            seconds = self._timeout(route).read
            raise ProblemError(
                504, f"{service} did not answer within {seconds:g} s", service=service
            ) from None
        except httpx.HTTPError as exc:
            log.warning("upstream failed", service=service, replica=base, error=repr(exc))
            raise ProblemError(
                502, f"{service} closed the connection without a valid answer", service=service
            ) from None

    def _upstream_url(self, request: Request, route: Route, base_url: str) -> httpx.URL:
        base = httpx.URL(base_url)
        if route.upstream_path is not None:
            path = route.upstream_path.encode()
        else:
            # The raw path keeps the client's percent-encoding exactly as sent.
            path = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string", b"")
        raw = base.raw_path.rstrip(b"/") + path + (b"?" + query if query else b"")
        return base.copy_with(raw_path=raw)

    def _upstream_headers(
        self, request: Request, principal: Principal | None, caller: str | None = None
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
        if caller is not None:
            headers.append((CALLER_HEADER, caller))
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

    def _returned_headers(self, upstream: httpx.Response, base: str) -> list[tuple[bytes, bytes]]:
        dropped = _NOT_RETURNED | _connection_tokens(upstream.headers.get("connection", ""))
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


async def _relay(upstream: httpx.Response, service: str, lease: Lease) -> AsyncIterator[bytes]:
    """The upstream body as it arrives, bytes untouched (compressed stays compressed)."""
    try:
        async for chunk in upstream.aiter_raw():
            yield chunk
    except httpx.HTTPError as exc:
        # Headers are already sent: all that is left is to abort the response.
        log.warning("upstream answer broke off", service=service, error=repr(exc))
        raise
    finally:
        # Also here, not only in the background task: that one does not run when the
        # client goes away mid-answer.
        lease.release()


async def _close(upstream: httpx.Response, lease: Lease) -> None:
    lease.release()
    await upstream.aclose()


class _WentAway(Exception):
    """The replica did not answer (refused, or the connection broke before an answer)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(reason)
        self.what = what  # for the caller's problem: "<service> <what>"
        self.reason = reason  # for the logs and the health report


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
    if isinstance(exc, (httpx.ReadError, httpx.WriteError)):
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
