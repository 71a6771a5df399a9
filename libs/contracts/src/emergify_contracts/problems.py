"""Errors as ``application/problem+json`` (RFC 9457), the same way in every service.

The problem format is a contract: every service answers with it and the API gateway passes
upstream problems through unchanged, so it lives here once. Code raises :class:`ProblemError`;
:func:`install_problem_handlers` turns it, FastAPI's validation errors, Starlette's HTTP
errors (404, 405, ...), mapped domain exceptions and any unexpected exception into problem
documents.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from emergify_contracts.song import TRACK_ID_RE

PROBLEM_MEDIA_TYPE = "application/problem+json"

# Per-request extension members a service adds to every problem it makes (the gateway's
# request id): called with the failing request.
ProblemContext = Callable[[Request], Mapping[str, Any]]

log = structlog.get_logger()


class Problem(BaseModel):
    """An RFC 9457 problem document; extensions appear as extra members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request and what to do about it.")
    instance: str | None = Field(None, description="The path of the request that failed.")


class ProblemError(Exception):
    """Stop handling a request and answer with a problem document.

    ``title`` defaults to the status's reason phrase, as RFC 9457 asks for ``about:blank``
    problems; ``extensions`` become extra members of the document (``max_rows=...``).
    """

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = "about:blank",  # the RFC 9457 member's name
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.type = type
        self.headers = dict(headers or {})
        self.extensions = extensions


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    type: str = "about:blank",  # the RFC 9457 member's name
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response; ``title`` defaults to the status's reason phrase."""
    problem = Problem(
        type=type,
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=instance,
        **extensions,
    )
    # Only ``instance`` is dropped when unset: an extension a caller set to None stays.
    body = problem.model_dump(mode="json", exclude={"instance"} if instance is None else None)
    return JSONResponse(
        body,
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


def problem_responses(
    *statuses: int, descriptions: Mapping[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` entries documenting a :class:`Problem` body for ``statuses``.

    ``descriptions`` overrides the reason phrase used as a status's description.
    """
    descriptions = descriptions or {}
    return {
        status: {
            "model": Problem,
            "description": descriptions.get(status) or HTTPStatus(status).phrase,
            "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in statuses
    }


def describe_request_errors(exc: RequestValidationError) -> list[str]:
    """One readable sentence per field error: ``body.limit: Input should be ... 100``."""
    out = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "request"
        pattern = (err.get("ctx") or {}).get("pattern")
        if err.get("type") == "string_pattern_mismatch" and pattern == TRACK_ID_RE.pattern:
            out.append(f"{where}: {err.get('input')!r} is not a 22-character base62 Spotify id")
            continue
        # Model validators' messages are already sentences; pydantic prefixes them.
        msg = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return out


def operation_id(route: APIRoute) -> str:
    """``{tag}-{name}``, so generated clients get readable method names.

    Pass it as FastAPI's ``generate_unique_id_function``.
    """
    return f"{route.tags[0] if route.tags else 'default'}-{route.name}"


def database_unavailable_problem(exc: Exception) -> ProblemError:
    """The 503 for a request that needs the database while it is unreachable; map
    :data:`emergify_contracts.tables.UNREACHABLE_ERRORS` to it in ``problems``."""
    return ProblemError(
        503,
        f"the database is unreachable ({type(exc).__name__}); retry in a few seconds",
        title="Database unavailable",
        headers={"Retry-After": "5"},
    )


def install_problem_handlers(
    app: FastAPI,
    *,
    service: str,
    not_found: str = "{path} is not a path of the {service}",
    context: ProblemContext | None = None,
    problems: Mapping[type[Exception], Callable[[Exception], ProblemError]] | None = None,
) -> None:
    """Make every error ``app`` raises a problem+json response that names the request path.

    ``service`` names the service in the 404 and 500 details; ``not_found`` is the 404 detail
    (``{path}`` and ``{service}`` are filled in) for paths no route serves. ``context`` adds
    extension members to every problem. ``problems`` maps domain exceptions to the problem
    they mean, so domain code need not know about HTTP. Unexpected exceptions are logged and
    answered with a 500 whose detail gives nothing away.
    """
    extra: ProblemContext = context or (lambda _request: {})

    def respond(request: Request, error: ProblemError) -> JSONResponse:
        return problem_response(
            error.status,
            error.detail,
            title=error.title,
            type=error.type,
            instance=request.url.path,
            headers=error.headers,
            **{**extra(request), **error.extensions},
        )

    async def problem_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return respond(request, exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = describe_request_errors(exc)
        detail = "; ".join(errors) or "the request is invalid"
        return respond(request, ProblemError(422, detail, title="Invalid request", errors=errors))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers 400 for a JSON body that is not UTF-8, 422 for one that is not
            # JSON: both are the documented 422 of a malformed body.
            cause = exc.__cause__
            error = f"body: not UTF-8 encoded JSON ({cause.reason} at byte {cause.start})"
            return respond(
                request, ProblemError(422, error, title="Invalid request", errors=[error])
            )
        detail = str(exc.detail)
        # Only Starlette's bare reason phrase is replaced; a route's own detail is kept.
        if detail == HTTPStatus(exc.status_code).phrase:
            if exc.status_code == 404:
                detail = not_found.format(path=request.url.path, service=service)
            elif exc.status_code == 405:
                detail = f"{request.method} is not allowed on {request.url.path}"
        return respond(request, ProblemError(exc.status_code, detail, headers=exc.headers))

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, error=repr(exc))
        detail = f"the {service} failed unexpectedly; the error is in its log"
        return respond(request, ProblemError(500, detail))

    def translated(
        make: Callable[[Exception], ProblemError],
    ) -> Callable[[Request, Exception], Any]:
        async def handler(request: Request, exc: Exception) -> JSONResponse:
            return respond(request, make(exc))

        return handler

    app.add_exception_handler(ProblemError, problem_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for exc_type, make in (problems or {}).items():
        app.add_exception_handler(exc_type, translated(make))
    app.add_exception_handler(Exception, unexpected_error)


__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "ProblemContext",
    "ProblemError",
    "describe_request_errors",
    "install_problem_handlers",
    "operation_id",
    "problem_response",
    "problem_responses",
]
