"""The sandbox app factory: state, request counting and injected 429s, and the routers
(``emergify_spotify.sandbox.routers``) for the accounts service, the consent page, the Web API
and the test controls."""

from __future__ import annotations

import re

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from emergify_spotify.sandbox.config import SandboxSettings
from emergify_spotify.sandbox.routers import accounts, consent, controls, web_api
from emergify_spotify.sandbox.state import SandboxState
from emergify_spotify.sandbox.wire import ApiError, SpotifyObjects, api_error

ROUTERS = (accounts.router, consent.router, web_api.router, web_api.removed, controls.router)


def _path_key(method: str, path: str) -> str:
    """Requests are counted per endpoint, ids replaced by ``{id}``."""
    path = re.sub(r"/(playlists|users)/[^/]+", r"/\1/{id}", path.rstrip("/") or "/")
    return f"{method} {path}"


class CountAndThrottle(BaseHTTPMiddleware):
    """Counts every request to Spotify's endpoints and answers the injected 429s."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        path = request.url.path
        if path.startswith("/_sandbox"):
            return await call_next(request)
        state: SandboxState = request.app.state.sandbox
        with state.lock:
            state.requests[_path_key(request.method, path)] += 1
            limit = next(
                (r for r in state.rate_limits if path.startswith(r.path_prefix) and r.remaining),
                None,
            )
            if limit is not None:
                limit.remaining -= 1
        if limit is not None:
            return api_error(
                429, "API rate limit exceeded", headers={"Retry-After": str(limit.retry_after)}
            )
        return await call_next(request)


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return api_error(exc.status, exc.message)


def create_app(settings: SandboxSettings | None = None) -> FastAPI:
    """The sandbox app; ``settings`` defaults to the environment's."""
    settings = settings or SandboxSettings()
    app = FastAPI(title="Spotify sandbox", version="1.0.0", docs_url="/_sandbox/docs")
    app.state.sandbox = SandboxState(settings)
    app.state.spotify_objects = SpotifyObjects(app.state.sandbox, settings.spotify_sandbox_url)
    app.add_middleware(CountAndThrottle)
    app.add_exception_handler(ApiError, _api_error)
    for router in ROUTERS:
        app.include_router(router)
    return app
