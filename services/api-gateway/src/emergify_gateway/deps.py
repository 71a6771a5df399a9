"""What route code needs from the running gateway, as typed FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from emergify_contracts.problems import ProblemError
from emergify_gateway.config import Settings
from emergify_gateway.health import HealthCache
from emergify_gateway.openapi import OpenAPIAggregator
from emergify_gateway.proxy import Proxy
from emergify_gateway.rate_limit import TokenBucketLimiter, client_address, retry_after_header
from emergify_gateway.routes import Access
from emergify_gateway.security import KeyRing, Principal, require, resolve_principal


@dataclass
class Gateway:
    """The gateway's long-lived parts; ``proxy`` and ``openapi`` exist while the app runs."""

    settings: Settings
    keys: KeyRing
    limiter: TokenBucketLimiter
    proxy: Proxy | None = None
    openapi: OpenAPIAggregator | None = None
    health: HealthCache | None = None


def get_gateway(request: Request) -> Gateway:
    """The :class:`Gateway` of the app serving ``request``."""
    return request.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def authorized_caller(request: Request, gateway: Gateway, needed: Access) -> Principal | None:
    """Identify the caller, rate-limit, and check it holds ``needed``; the caller, if any.

    Raises 401 (no or wrong key), 429 (over the rate) or 403 (missing scope) problems.
    """
    principal = None
    if needed is not Access.PUBLIC:
        try:
            principal = resolve_principal(request, gateway.keys)
        except ProblemError:
            limit(request, gateway, None)  # wrong keys cost tokens: guessing stays slow
            raise
    request.state.key_id = principal.key_id if principal else None
    limit(request, gateway, principal)
    require(needed, principal, request.method, request.url.path)
    return principal


def limit(request: Request, gateway: Gateway, principal: Principal | None) -> None:
    """Raise a 429 problem when the caller is over its rate.

    A key holder (or signed-in listener) is limited per key, at the key's own rate when it has
    one, from whatever address; everyone else per client address (see :func:`client_address`).
    """
    if principal is not None and principal.kind != "anonymous":
        wait = gateway.limiter.acquire(f"key:{principal.key_id}", principal.rate_per_minute)
    else:
        address = client_address(
            request.client.host if request.client else None,
            request.headers.get("x-forwarded-for"),
            gateway.settings.trusted_proxies,
        )
        wait = gateway.limiter.acquire(f"ip:{address}")
    if wait > 0:
        retry_after = retry_after_header(wait)
        raise ProblemError(
            429,
            f"too many requests; try again in {retry_after} s",
            headers={"Retry-After": retry_after},
        )


def admin_caller(request: Request, gateway: GatewayDep) -> Principal:
    """The caller of an admin endpoint, who must hold the ``admin`` scope."""
    principal = authorized_caller(request, gateway, Access.ADMIN)
    assert principal is not None
    return principal


AdminDep = Annotated[Principal, Depends(admin_caller)]
