"""The gateway's HTTP surface: its own endpoints, and one thin endpoint per routing-table entry."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from emergify_contracts.problems import ProblemError
from emergify_gateway.deps import Gateway, GatewayDep
from emergify_gateway.health import HealthReport, check_services
from emergify_gateway.rate_limit import retry_after_header
from emergify_gateway.routes import Access, Route
from emergify_gateway.security import Principal, authorize, resolve_principal

router = APIRouter()


@router.get(
    "/health",
    tags=["health"],
    response_model=HealthReport,
    responses={503: {"model": HealthReport, "description": "At least one service is not ok."}},
    summary="Every service's state",
)
async def read_health(gateway: GatewayDep) -> JSONResponse:
    """200 when every service reports ok, else 503 with each service's state."""
    assert gateway.proxy is not None
    report = await check_services(
        gateway.proxy.client, gateway.proxy.urls, gateway.settings.probe_timeout_seconds
    )
    return JSONResponse(
        report.model_dump(mode="json", exclude_none=True),
        status_code=200 if report.status == "ok" else 503,
    )


@router.get("/openapi.json", include_in_schema=False)
async def read_openapi(gateway: GatewayDep) -> JSONResponse:
    """The merged OpenAPI document of the public API."""
    assert gateway.openapi is not None
    return JSONResponse(await gateway.openapi.document())


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
async def read_docs() -> HTMLResponse:
    """Swagger UI for the merged document."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="Emergify API",
        swagger_ui_parameters={"persistAuthorization": True},
    )


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
        principal = None
        if route.access is not Access.PUBLIC:
            try:
                principal = resolve_principal(request, gateway.keys)
            except ProblemError:
                _limit(request, gateway, None)  # wrong keys cost tokens: guessing stays slow
                raise
        request.state.key_id = principal.key_id if principal else None
        _limit(request, gateway, principal)
        authorize(route, principal, request.method, request.url.path)
        assert gateway.proxy is not None
        return await gateway.proxy.forward(request, route, principal)

    return endpoint


def _limit(request: Request, gateway: Gateway, principal: Principal | None) -> None:
    """Raise a 429 problem when the client address or the key is over its rate."""
    identities = [f"ip:{request.client.host if request.client else 'unknown'}"]
    if principal is not None and principal.kind != "anonymous":
        identities.append(f"key:{principal.key_id}")
    wait = gateway.limiter.acquire(*identities)
    if wait > 0:
        retry_after = retry_after_header(wait)
        raise ProblemError(
            429,
            f"too many requests; try again in {retry_after} s",
            headers={"Retry-After": retry_after},
        )
