"""The gateway's HTTP surface: its own endpoints, and one thin endpoint per routing-table entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Body, FastAPI, Path, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field, field_validator

from emergify_contracts.problems import ProblemError
from emergify_gateway.deps import AdminDep, Gateway, GatewayDep, authorized_caller
from emergify_gateway.health import HealthReport
from emergify_gateway.keystore import KeyNotFoundError, KeyRecord, KeyStore
from emergify_gateway.openapi import KEY_REQUIRED, problem_openapi_response
from emergify_gateway.rate_limit import parse_rate
from emergify_gateway.routes import Access, Route, parse_scope
from emergify_gateway.security import presented_key, sign_out
from emergify_gateway.security_headers import docs_content_security_policy

router = APIRouter()


@router.get(
    "/health",
    tags=["health"],
    response_model=HealthReport,
    response_model_exclude_none=True,
    responses={503: {"model": HealthReport, "description": "At least one service is not ok."}},
    summary="Up or down; each service's state for admin keys",
)
async def read_health(request: Request, gateway: GatewayDep) -> JSONResponse:
    """200 when every service reports ok, else 503. Only a caller with an admin key sees each
    service's state and details; everyone else sees up or down."""
    assert gateway.health is not None
    report = await gateway.health.report()
    if not _is_admin(request, gateway):
        report = report.public()
    return JSONResponse(
        report.model_dump(mode="json", exclude_none=True),
        status_code=200 if report.status == "ok" else 503,
    )


def _is_admin(request: Request, gateway: Gateway) -> bool:
    """Whether the request carries a valid admin key (never a 401: health is public)."""
    if gateway.keys.open:
        return True
    key = presented_key(request)
    principal = gateway.keys.identify(key) if key else None
    return principal is not None and principal.may(Access.ADMIN)


@router.get("/openapi.json", include_in_schema=False)
async def read_openapi(gateway: GatewayDep) -> JSONResponse:
    """The merged OpenAPI document of the public API."""
    assert gateway.openapi is not None
    return JSONResponse(await gateway.openapi.document())


#: Where the gateway serves Swagger UI's own files (from the fastapi-offline package).
DOCS_ASSETS = "/docs/assets"


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
async def read_docs() -> HTMLResponse:
    """Swagger UI for the merged document, from files the gateway serves itself (no CDN: the
    page works offline), with a policy that allows exactly what it loads. Authorizations are
    not persisted: a key typed in stays in the page, never in the browser's storage."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Emergify API",
        swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
        swagger_ui_parameters={"persistAuthorization": False},
    )
    page.headers["Content-Security-Policy"] = docs_content_security_policy(
        bytes(page.body).decode()
    )
    return page


# ---- API key management (scope admin) -----------------------------------------------------

ScopeName = Literal["recs:read", "catalog:write", "admin"]
KeyIdPath = Annotated[
    str, Path(pattern=r"^[0-9a-f]{12}$", description="The key's id (12 hex digits).")
]
_RETRY = {"Retry-After": "Seconds to wait before trying again."}
_ADMIN_RESPONSES: dict[int | str, dict] = {
    401: problem_openapi_response(
        "No API key, or not a valid one.",
        {"WWW-Authenticate": "The authentication scheme to use (Bearer)."},
    ),
    403: problem_openapi_response("The key lacks the 'admin' scope."),
    422: problem_openapi_response("The request is invalid; the detail says which field."),
    429: problem_openapi_response("Too many requests from this key or address.", _RETRY),
}
_KEY_RESPONSES = {**_ADMIN_RESPONSES, 404: problem_openapi_response("No key has this id.")}
_ADMIN_ONLY = {"security": KEY_REQUIRED, "x-emergify-scope": "admin"}


class KeyInfo(BaseModel):
    """An issued API key as listings show it: never the key, never its hash."""

    id: str = Field(description="The key's id; logs and upstreams see only this.")
    name: str = Field(description="What the key is for, as given when it was created.")
    scopes: list[ScopeName] = Field(description="What the key may do; 'admin' implies all.")
    created_at: datetime = Field(description="When the key was created.")
    revoked_at: datetime | None = Field(None, description="When it was revoked, if it was.")
    expires_at: datetime | None = Field(
        None, description="End of a rotation's grace period: the key stops working then."
    )
    rotated_from: str | None = Field(None, description="The id of the key this one replaced.")
    rate_per_minute: int | None = Field(
        None, description="The key's own rate limit; null: the gateway's default; 0: none."
    )

    @classmethod
    def of(cls, record: KeyRecord) -> KeyInfo:
        return cls.model_validate(record.public())


class KeyCreated(KeyInfo):
    """A new key. ``key`` is shown this once: the gateway keeps only its hash."""

    key: str = Field(description="The API key; send it as X-API-Key. Not retrievable later.")


class KeyList(BaseModel):
    """Every issued key, revoked ones included."""

    items: list[KeyInfo] = Field(description="Keys, oldest first.")


class KeyRequest(BaseModel):
    """A key to create."""

    name: str = Field(min_length=1, max_length=100, description="What the key is for.")
    scopes: list[ScopeName] = Field(
        min_length=1, description="recs:read (reads), catalog:write (uploads), admin (all)."
    )
    rate: str | None = Field(
        None,
        max_length=40,
        description="The key's own rate limit, e.g. '6000/min', '10/s' or 'unlimited'; "
        "omitted: the gateway's default.",
        examples=["6000/min"],
    )

    @field_validator("rate")
    @classmethod
    def _rate_is_a_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)  # raises ValueError with what to write instead
        return value


class RotateRequest(BaseModel):
    """How long the old key keeps working after a rotation."""

    grace_seconds: float = Field(
        0, ge=0, le=30 * 86400, description="0: the old key stops at once."
    )


def _store(gateway: Gateway) -> KeyStore:
    store = gateway.keys.store
    assert store is not None, "create_app always gives the key ring a key store"
    return store


@router.post(
    "/api/v1/admin/keys",
    tags=["admin"],
    status_code=201,
    response_model=KeyCreated,
    responses=_ADMIN_RESPONSES,
    openapi_extra=_ADMIN_ONLY,
    summary="Create a scoped API key",
)
def create_key(body: KeyRequest, gateway: GatewayDep, caller: AdminDep) -> KeyCreated:
    """Issue a key with the given scopes. The answer carries the key; it is never shown again.

    Needs the 'admin' scope.
    """
    rate = parse_rate(body.rate) if body.rate is not None else None
    issued = _store(gateway).file.create(body.name, {parse_scope(s) for s in body.scopes}, rate)
    return KeyCreated(**KeyInfo.of(issued.record).model_dump(), key=issued.key)


@router.get(
    "/api/v1/admin/keys",
    tags=["admin"],
    response_model=KeyList,
    responses=_ADMIN_RESPONSES,
    openapi_extra=_ADMIN_ONLY,
    summary="List API keys",
)
def list_keys(gateway: GatewayDep, caller: AdminDep) -> KeyList:
    """Every key the key file holds (ids, names, scopes, dates). Needs the 'admin' scope."""
    records = sorted(_store(gateway).records().values(), key=lambda r: r.created_at)
    return KeyList(items=[KeyInfo.of(record) for record in records])


@router.delete(
    "/api/v1/admin/keys/{key_id}",
    tags=["admin"],
    response_model=KeyInfo,
    responses=_KEY_RESPONSES,
    openapi_extra=_ADMIN_ONLY,
    summary="Revoke an API key",
)
def revoke_key(key_id: KeyIdPath, gateway: GatewayDep, caller: AdminDep) -> KeyInfo:
    """Stop the key working from the next request on. Needs the 'admin' scope."""
    try:
        return KeyInfo.of(_store(gateway).file.revoke(key_id))
    except KeyNotFoundError as exc:
        raise ProblemError(404, str(exc), key_id=key_id) from None


@router.post(
    "/api/v1/admin/keys/{key_id}/rotate",
    tags=["admin"],
    status_code=201,
    response_model=KeyCreated,
    responses={
        **_KEY_RESPONSES,
        409: problem_openapi_response("The key is already revoked or expired."),
    },
    openapi_extra=_ADMIN_ONLY,
    summary="Rotate an API key",
)
def rotate_key(
    key_id: KeyIdPath,
    gateway: GatewayDep,
    caller: AdminDep,
    body: Annotated[RotateRequest | None, Body()] = None,
) -> KeyCreated:
    """A new key with the same name and scopes; the old one works for ``grace_seconds`` more.

    Needs the 'admin' scope.
    """
    grace = body.grace_seconds if body is not None else 0
    try:
        issued = _store(gateway).file.rotate(key_id, grace)
    except KeyNotFoundError as exc:
        raise ProblemError(404, str(exc), key_id=key_id) from None
    except ValueError as exc:
        raise ProblemError(409, str(exc), key_id=key_id) from None
    return KeyCreated(**KeyInfo.of(issued.record).model_dump(), key=issued.key)


def add_proxy_routes(app: FastAPI, routes: tuple[Route, ...]) -> None:
    """Register one endpoint per routing-table entry, in table order."""
    for route in routes:
        app.add_api_route(
            route.path,
            proxy_endpoint(route),
            methods=sorted(route.methods),
            include_in_schema=False,  # documented by the upstream's own OpenAPI, merged
            name=f"proxy {route.service} {route.path}",
        )


def proxy_endpoint(route: Route) -> Callable[[Request, Gateway], Awaitable[Response]]:
    """The endpoint for ``route``: identify the caller, rate-limit, authorize, forward."""

    async def endpoint(request: Request, gateway: GatewayDep) -> Response:
        principal = authorized_caller(request, gateway, route.access)
        if route.signs_out:
            sign_out(request, gateway.keys)
        assert gateway.proxy is not None
        return await gateway.proxy.forward(request, route, principal)

    return endpoint
