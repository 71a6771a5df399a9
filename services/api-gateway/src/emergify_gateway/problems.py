"""Every error the gateway itself makes, as ``application/problem+json`` (RFC 9457).

Route code raises :class:`ProblemError`; :func:`install_problem_handlers` turns it, FastAPI's
validation errors and Starlette's HTTP errors (404, 405, ...) into problem documents that carry
``instance`` (the request path) and ``request_id``. Problems that come from an upstream service
are not made here: the proxy passes them through unchanged.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_MEDIA_TYPE = "application/problem+json"


class Problem(BaseModel):
    """An RFC 9457 problem document; extensions appear as extra members."""

    model_config = ConfigDict(extra="allow")

    type: str = Field("about:blank", description="URI naming the problem type.")
    title: str = Field(description="Short summary of the problem type.")
    status: int = Field(description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request and what to do about it.")
    instance: str | None = Field(None, description="The path of the request that failed.")
    request_id: str | None = Field(None, description="The X-Request-ID of the request.")


class ProblemError(Exception):
    """Stop handling a request and answer with a problem document."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.title = title or HTTPStatus(status).phrase
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions


def problem_response(
    request: Request,
    status: int,
    detail: str,
    *,
    title: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response about ``request``, with its path and request id filled in."""
    problem = Problem(
        title=title or HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        instance=request.url.path,
        request_id=getattr(request.state, "request_id", None),
        **extensions,
    )
    return JSONResponse(
        problem.model_dump(mode="json"),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


async def _problem_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.detail, title=exc.title, headers=exc.headers, **exc.extensions
    )


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    messages = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        messages.append(f"{loc or 'request'}: {err.get('msg', 'is invalid')}")
    return problem_response(
        request,
        422,
        "; ".join(messages) or "the request is invalid",
        title="Invalid request",
        errors=messages,
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"{request.url.path} is not an Emergify API path; the list is at /docs"
    elif exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path}"
    return problem_response(request, exc.status_code, detail, headers=dict(exc.headers or {}))


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error ``app`` raises a problem+json response.

    Unexpected exceptions are answered by :class:`~emergify_gateway.request_context.
    RequestContextMiddleware`, which sits outside these handlers and knows the request id.
    """
    app.add_exception_handler(ProblemError, _problem_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)


def problem_openapi_response(description: str, headers: dict[str, str] | None = None) -> dict:
    """An OpenAPI response object whose body is a :class:`Problem`."""
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response
