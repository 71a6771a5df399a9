"""Bounds on request bodies: media type, and size before and while reading."""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import Message

from emergify_contracts.problems import ProblemError


def media_type(request: Request) -> str:
    """The request's media type, lower-cased, without parameters."""
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def require_media_type(request: Request, *accepted: str, hint: str) -> None:
    """Refuse (415) a request whose media type is not one of ``accepted`` (``+json`` counts)."""
    actual = media_type(request)
    if actual in accepted or ("application/json" in accepted and actual.endswith("+json")):
        return
    raise ProblemError(
        415,
        f"Content-Type {actual or '(none)'} is not accepted here; {hint}",
        title="Unsupported media type",
        accepted=list(accepted),
    )


def require_identity_encoding(request: Request) -> None:
    """Refuse (415) a compressed request body (``Content-Encoding`` other than identity).

    Bodies are never inflated: a few megabytes of gzip can expand to gigabytes, and the size
    limit counts the bytes on the wire. RFC 9110 names 415 for an unsupported content coding.
    """
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in ("", "identity"):
        return
    raise ProblemError(
        415,
        f"Content-Encoding {encoding[:40]!r} is not accepted: request bodies are not "
        "decompressed; send the body uncompressed",
        title="Unsupported content encoding",
        headers={"Accept-Encoding": "identity"},
        accepted_encodings=["identity"],
    )


def _too_large(max_bytes: int) -> ProblemError:
    return ProblemError(
        413,
        f"the request body is larger than the limit of {max_bytes} bytes "
        f"(max_upload_bytes={max_bytes}); split the upload into smaller files",
        title="Upload too large",
        max_upload_bytes=max_bytes,
    )


def size_limited(request: Request, max_bytes: int) -> Request:
    """``request`` with a body of at most ``max_bytes``, else a 413 problem.

    Content-Length is checked first, so an honest client is refused before it sends anything;
    the bytes are counted while reading too, for chunked bodies and dishonest headers.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            length = int(declared)
        except ValueError:
            raise ProblemError(
                400,
                f"Content-Length {declared[:40]!r} is not a number",
                title="Bad Content-Length",
            ) from None
        if length > max_bytes:
            raise _too_large(max_bytes)

    receive = request.receive
    received = 0

    async def counting_receive() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise _too_large(max_bytes)
        return message

    return Request(request.scope, counting_receive)
