"""Per-request context: the request id, one access-log line, and a last-resort 500 problem.

A pure ASGI middleware rather than ``BaseHTTPMiddleware`` so proxied bodies stream through
untouched and structlog's context variables reach the route code.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import structlog
from fastapi import Request
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emergify_contracts.problems import problem_response

REQUEST_ID_HEADER = "X-Request-ID"

# Letters, digits and a few separators, as UUIDs and most tracing ids use: a client's id is
# echoed into headers and logs, so anything else (spaces, control characters, kilobytes) is
# replaced rather than trusted.
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")

ACCESS_LOGGER = "emergify_gateway.access"


def problem_context(request: Request) -> dict[str, Any]:
    """The request id every problem the gateway makes carries (set by the middleware)."""
    return {"request_id": getattr(request.state, "request_id", None)}


def accept_request_id(candidate: str | None) -> str:
    """The client's request id if it is sane, else a new one."""
    if candidate and _SANE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


class RequestContextMiddleware:
    """Give every request an id (kept from the client when sane), return it, log the request.

    Route code records the caller's key id as ``request.state.key_id``; the log line shows it,
    never the key.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accept_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER))
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                structlog.get_logger(ACCESS_LOGGER).exception(
                    "unhandled error", method=scope["method"], path=scope["path"]
                )
                if response_started:
                    raise  # Too late for a problem document; the server aborts the response.
                response = problem_response(
                    500,
                    "the API gateway failed unexpectedly; the error is in its log",
                    instance=scope["path"],
                    headers={REQUEST_ID_HEADER: request_id},
                    request_id=request_id,
                )
                await response(scope, receive, send)
            finally:
                # Looked up per request, not cached at import, so logging set up later applies.
                structlog.get_logger(ACCESS_LOGGER).info(
                    "request",
                    method=scope["method"],
                    path=scope["path"],  # Never the query: OAuth callbacks carry codes there.
                    status=status,
                    ms=round((time.perf_counter() - started) * 1000, 1),
                    key_id=state.get("key_id"),
                    request_id=request_id,
                )
