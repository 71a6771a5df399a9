"""Errors as ``application/problem+json`` (RFC 9457), including FastAPI's validation errors."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from emergify_contracts.song import TRACK_ID_RE
from emergify_recommender.catalog import CatalogNotReady

PROBLEM_JSON = "application/problem+json"
log = structlog.get_logger()


class Problem(BaseModel):
    """An RFC 9457 problem document."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="A URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong in this request, and what to do.")


class ProblemError(Exception):
    """Raise from a route to answer with a problem document."""

    def __init__(self, status: int, title: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title
        self.detail = detail
        self.extensions = extensions


def problem_response(
    status: int, title: str, detail: str, headers: dict[str, str] | None = None, **extensions: Any
) -> JSONResponse:
    """A problem+json response."""
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, rest = parts[0], parts[1:]
        return f"{where} {'.'.join(rest)}" if rest else where
    return ".".join(parts)


def describe_request_errors(exc: RequestValidationError) -> list[str]:
    """One readable sentence per validation error: ``query limit: must be <= 100``."""
    out = []
    for err in exc.errors():
        where = _location(err.get("loc", ()))
        pattern = (err.get("ctx") or {}).get("pattern")
        if err.get("type") == "string_pattern_mismatch" and pattern == TRACK_ID_RE.pattern:
            out.append(f"{where}: {err.get('input')!r} is not a 22-character base62 Spotify id")
            continue
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        out.append(f"{where}: {msg}")
    return out


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error, including 422 and unexpected 500s, with problem+json."""

    @app.exception_handler(ProblemError)
    async def _problem(_request: Request, exc: ProblemError) -> JSONResponse:
        return problem_response(exc.status, exc.title, exc.detail, **exc.extensions)

    @app.exception_handler(CatalogNotReady)
    async def _not_ready(_request: Request, exc: CatalogNotReady) -> JSONResponse:
        return problem_response(
            503, "Catalog not ready", f"{exc}; retry shortly.", headers={"Retry-After": "2"}
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = describe_request_errors(exc)
        return problem_response(422, "Invalid request", "; ".join(errors), errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        return problem_response(
            exc.status_code, title, str(exc.detail), headers=getattr(exc, "headers", None)
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return problem_response(
            500, "Internal error", "The recommender failed to answer; the error is logged."
        )
