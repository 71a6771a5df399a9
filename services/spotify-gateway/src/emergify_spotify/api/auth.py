"""Sign-in with Spotify: GET /login, /callback, /logout under /api/v1/spotify."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode, urlsplit, urlunsplit

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from emergify_contracts import session
from emergify_contracts.problems import ProblemError, problem_responses
from emergify_spotify.api.deps import AppServices, ReadyServices
from emergify_spotify.oauth import begin_sign_in, finish_sign_in

router = APIRouter(prefix="/api/v1/spotify", tags=["spotify"])

# Binds the sign-in to the browser that started it (RFC 9700 §4.7: login CSRF).
STATE_COOKIE = "emergify_oauth_state"
CALLBACK_PATH = "/api/v1/spotify/callback"


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit(parts._replace(query=query))


def _secure(services: AppServices) -> bool:
    return services.settings.spotify_redirect_uri.startswith("https://")


@router.get(
    "/login",
    status_code=302,
    response_class=RedirectResponse,
    name="login",
    summary="Sign in with Spotify",
    responses={302: {"description": "To Spotify's consent page."}, **problem_responses(503)},
)
def login(services: ReadyServices) -> RedirectResponse:
    """Redirect to Spotify's authorize page (authorization code + PKCE S256 + one-time state)."""
    assert services.states is not None
    url, state = begin_sign_in(services.settings, services.states)
    response = RedirectResponse(url, status_code=302)
    response.set_cookie(
        STATE_COOKIE,
        state,
        max_age=services.settings.oauth_state_ttl_seconds,
        path=CALLBACK_PATH,
        httponly=True,
        samesite="lax",
        secure=_secure(services),
    )
    return response


@router.get(
    "/callback",
    status_code=302,
    response_class=RedirectResponse,
    name="callback",
    summary="Where Spotify sends the listener back",
    responses={
        302: {"description": "To the dashboard, signed in (or with ?spotify_error=...)."},
        **problem_responses(400, 502, 503),
    },
)
def callback(
    request: Request,
    services: ReadyServices,
    code: Annotated[str | None, Query(description="Authorization code from Spotify.")] = None,
    state: Annotated[str | None, Query(description="The state sent to Spotify.")] = None,
    error: Annotated[str | None, Query(description="Why Spotify did not sign in.")] = None,
) -> RedirectResponse:
    """Check the state, exchange the code, store the tokens, start the session."""
    assert services.states is not None and services.tokens is not None
    settings = services.settings
    if error is not None:
        if state:
            services.states.consume(state)  # spent either way
        response = RedirectResponse(
            _with_query(settings.dashboard_url, spotify_error=error), status_code=302
        )
        response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
        return response
    if not code or not state:
        raise ProblemError(
            400, "the callback needs `code` and `state`; start from GET /api/v1/spotify/login"
        )
    if request.cookies.get(STATE_COOKIE) != state:
        services.states.consume(state)
        raise ProblemError(
            400,
            "this sign-in was not started in this browser (state cookie missing or different); "
            "start again from GET /api/v1/spotify/login",
            title="Invalid sign-in state",
        )
    signed_in = finish_sign_in(settings, services.states, services.tokens, code, state)
    assert settings.session_secret is not None
    response = RedirectResponse(settings.dashboard_url, status_code=302)
    response.set_cookie(
        session.SESSION_COOKIE,
        session.sign(
            signed_in.listener_id,
            settings.session_secret.get_secret_value(),
            settings.session_max_age_seconds,
        ),
        max_age=settings.session_max_age_seconds,
        path="/",
        httponly=True,
        samesite="lax",
        secure=_secure(services),
    )
    response.delete_cookie(STATE_COOKIE, path=CALLBACK_PATH)
    return response


# A POST: a link, an image or a prefetch must not sign anyone out (the gateway also revokes
# the session cookie on this route).
@router.post(
    "/logout",
    status_code=303,
    response_class=RedirectResponse,
    name="logout",
    summary="Sign out",
    responses={303: {"description": "To the dashboard, signed out."}, **problem_responses(503)},
)
def logout(request: Request, services: ReadyServices) -> RedirectResponse:
    """Forget the listener's Spotify tokens and end the session (POST only)."""
    assert services.tokens is not None and services.settings.session_secret is not None
    listener = session.verify(
        request.cookies.get(session.SESSION_COOKIE), services.settings.session_secrets()
    )
    if listener is not None:
        services.tokens.delete(listener)
    response = RedirectResponse(
        _with_query(services.settings.dashboard_url, spotify="signed_out"), status_code=303
    )
    response.delete_cookie(session.SESSION_COOKIE, path="/")
    return response
