"""What route code needs from the running gateway, as typed FastAPI dependencies."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from emergify_contracts.problems import ProblemError
from emergify_gateway.config import Settings
from emergify_gateway.openapi import OpenAPIAggregator
from emergify_gateway.proxy import Proxy
from emergify_gateway.rate_limit import TokenBucketLimiter, retry_after_header
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
    """Raise a 429 problem when the client address or the key id is over its rate.

    Both buckets must have a token: several keys used from one address share the address's
    bucket, and one key used from several addresses shares the key's.
    """
    identities = [f"ip:{request.client.host if request.client else 'unknown'}"]
    if principal is not None and principal.kind == "dashboard":
        # Every viewer comes from the dashboard's one address: the per-viewer key bucket is
        # the limit, not the address they share.
        identities = []
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


def admin_caller(request: Request, gateway: GatewayDep) -> Principal:
    """The caller of an admin endpoint, who must hold the ``admin`` scope."""
    principal = authorized_caller(request, gateway, Access.ADMIN)
    assert principal is not None
    return principal


AdminDep = Annotated[Principal, Depends(admin_caller)]
