"""Errors as ``application/problem+json`` (RFC 9457), for every failure the service reports.

Domain code raises :class:`ProblemError`; :func:`install_problem_handlers` turns it, FastAPI's
validation errors, Starlette's HTTP errors and any unexpected exception into problem documents.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"

log = structlog.get_logger()


class Problem(BaseModel):
    """An RFC 9457 problem document; extensions appear as extra members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request and what to do about it.")


class ProblemError(Exception):
    """Stop handling a request and answer with a problem document."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def to_response(self) -> JSONResponse:
        """The problem as a response."""
        body = Problem(title=self.title, status=self.status, detail=self.detail, **self.extensions)
        return problem_response(body, self.headers)


def problem_response(problem: Problem, headers: dict[str, str] | None = None) -> JSONResponse:
    """Serialise ``problem`` with the problem+json media type."""
    return JSONResponse(
        problem.model_dump(mode="json"),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given problem statuses."""
    return {status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}} for status in statuses}


async def _problem_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return exc.to_response()


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        messages.append(f"{loc or 'request'}: {err.get('msg', 'is invalid')}")
    problem = Problem(
        title="Invalid request",
        status=422,
        detail="; ".join(messages) or "the request is invalid",
        errors=messages,
    )
    return problem_response(problem)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "Request failed")
    problem = Problem(title=title, status=exc.status_code, detail=str(exc.detail))
    return problem_response(problem, dict(exc.headers or {}))


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, error=repr(exc))
    problem = Problem(
        title="Internal error",
        status=500,
        detail="the ingest service failed unexpectedly; the error is in its log",
    )
    return problem_response(problem)


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem+json response."""
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)


__all__ = [
    "PROBLEM_MEDIA_TYPE",
    "Problem",
    "ProblemError",
    "install_problem_handlers",
    "problem_response",
    "problem_responses",
]
