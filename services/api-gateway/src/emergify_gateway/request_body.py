"""Request bodies: a size limit per route, a deadline for the whole body, and lingering close.

* **Size.** Uploads may be large (``max_upload_bytes``); every other body is JSON and small
  (``max_json_bytes``). The limit is checked on the declared ``Content-Length`` before reading
  and on the bytes as they arrive, so an oversized body is refused before anything parses it
  or it reaches an upstream.
* **Deadline.** The whole body must arrive within ``request_deadline_seconds``: a client that
  drips a byte at a time cannot hold a gateway task and an upstream connection for long (408).
* **Lingering close.** Clients such as urllib and requests send their whole body before they
  read the answer. If the gateway answers early (401, 403, 413) and closes with unread bytes
  in its socket, the kernel resets the connection and the client never sees the answer. So,
  like nginx's lingering close, the answer is sent first and the rest of the body is then read
  and discarded, for a bounded time and size, before the response is finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emergify_contracts.problems import ProblemError, problem_response

log = structlog.get_logger()


class BodyRefusedError(Exception):
    """Raised from ``receive`` once the body is over its limit or past its deadline."""


class RequestBodyMiddleware:
    """Enforce the body limit of each route and the body deadline; linger after early answers.

    ``limit_for(method, path)`` is the largest body the route takes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit_for: Callable[[str, str], int],
        deadline_seconds: float,
        linger_seconds: float,
        linger_max_bytes: int,
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.deadline_seconds = deadline_seconds
        self.linger_seconds = linger_seconds
        self.linger_max_bytes = linger_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if "transfer-encoding" not in headers and declared in ("", "0"):
            await self.app(scope, receive, send)  # no body: nothing to bound
            return
        # A declared size over the limit is the route's to refuse (after authentication, so
        # a caller without a key learns that first); the bytes read are counted here.
        limit = self.limit_for(scope["method"], scope["path"])

        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.deadline_seconds
        received = 0
        body_done = False
        refusal: ProblemError | None = None
        response_started = False
        # A client waiting for "100 Continue" has sent nothing; reading would invite the body.
        expects_continue = headers.get("expect", "").lower() == "100-continue"

        async def guarded_receive() -> Message:
            nonlocal received, body_done, refusal
            if refusal is not None:
                raise BodyRefusedError
            remaining = deadline - loop.time()
            try:
                if remaining <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), remaining)
            except TimeoutError:
                refusal = _too_slow(self.deadline_seconds)
                raise BodyRefusedError from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > limit:
                    refusal = _too_large(limit)
                    raise BodyRefusedError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if refusal is not None and not response_started:
                return  # the refusal is answered below, whatever the app made of it
            if message["type"] == "http.response.start":
                response_started = True
            final = message["type"] == "http.response.body" and not message.get("more_body")
            if final and not body_done and not (expects_continue and received == 0):
                await send({**message, "more_body": True})
                await self._linger(receive)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        except Exception:
            if refusal is None or response_started:
                raise
        if refusal is not None and not response_started:
            # A slow client is not waited for again; a large body is drained so it can read.
            await self._refuse(scope, receive, send, refusal, linger=refusal.status == 413)

    async def _refuse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        refusal: ProblemError,
        *,
        linger: bool,
    ) -> None:
        """Answer with ``refusal``; then drain the body unless the client is too slow for it."""
        request_id = scope.get("state", {}).get("request_id")
        response = problem_response(
            refusal.status,
            refusal.detail,
            title=refusal.title,
            instance=scope["path"],
            headers={**refusal.headers, "Connection": "close"},
            **refusal.extensions,
            request_id=request_id,
        )
        log.info("request body refused", status=refusal.status, path=scope["path"])
        linger = linger and Headers(scope=scope).get("expect", "").lower() != "100-continue"

        async def send_then_linger(message: Message) -> None:
            if linger and message["type"] == "http.response.body" and not message.get("more_body"):
                await send({**message, "more_body": True})
                await self._linger(receive)
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await send(message)

        await response(scope, receive, send_then_linger)

    async def _linger(self, receive: Receive) -> None:
        """Read and discard the rest of the body, at most ``linger_max_bytes`` for at most
        ``linger_seconds``, so the client finishes sending and reads the answer."""
        drained = 0
        try:
            async with asyncio.timeout(self.linger_seconds):
                while drained <= self.linger_max_bytes:
                    message = await receive()
                    if message["type"] != "http.request":
                        return
                    drained += len(message.get("body", b""))
                    if not message.get("more_body", False):
                        return
        except TimeoutError:
            pass
        # The client may now see a reset; it had linger_seconds to finish sending.
        log.info("stopped discarding an unread request body", discarded_bytes=drained)


def _too_large(limit: int) -> ProblemError:
    return ProblemError(
        413,
        f"the request body is larger than this route's limit of {limit} bytes "
        f"({limit / 1024:g} KiB); uploads take up to max_upload_bytes, other requests are "
        "small JSON documents",
        title="Request body too large",
        max_bytes=limit,
    )


def _too_slow(seconds: float) -> ProblemError:
    return ProblemError(
        408,
        f"the request body did not arrive within {seconds:g} s; send it at once, or split a "
        "large upload",
        title="Request timeout",
        deadline_seconds=seconds,
    )
