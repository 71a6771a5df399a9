"""What route code needs from the running gateway, as a typed FastAPI dependency."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from emergify_gateway.config import Settings
from emergify_gateway.openapi import OpenAPIAggregator
from emergify_gateway.proxy import Proxy
from emergify_gateway.rate_limit import TokenBucketLimiter
from emergify_gateway.security import KeyRing


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
