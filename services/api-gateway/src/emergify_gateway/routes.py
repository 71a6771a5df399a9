"""The routing table: every public path, the service that answers it, and who may call it.

This is the one place to look to learn where a request goes. Paths use Starlette's template
syntax (``{track_id}``, ``{rest:path}``); entries are matched in order, so specific entries
come before catch-alls.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from emergify_gateway.config import Settings


class Access(StrEnum):
    """Who may call a route: anyone, or a caller holding one API-key scope.

    The values other than ``public`` are the scopes keys are issued with; ``admin`` implies
    the other two. A signed-in Spotify session holds ``recs:read``.
    """

    PUBLIC = "public"  # anyone, no key
    READ = "recs:read"  # recommendations, search, catalog, clusters, model, /spotify/*
    WRITE = "catalog:write"  # song uploads
    ADMIN = "admin"  # retraining, key management; implies the scopes above


# The scopes a key can be issued with, in the order they are listed.
SCOPES: tuple[Access, ...] = (Access.READ, Access.WRITE, Access.ADMIN)


def parse_scope(text: str) -> Access:
    """The scope named ``text`` (``recs:read``, ``catalog:write``, ``admin``)."""
    for scope in SCOPES:
        if text.strip().lower() == scope.value:
            return scope
    names = ", ".join(scope.value for scope in SCOPES)
    raise ValueError(f"{text!r} is not a scope; use one of {names}")


def grants(scopes: frozenset[Access], needed: Access) -> bool:
    """Whether a caller holding ``scopes`` may call a route that needs ``needed``."""
    return needed is Access.PUBLIC or needed in scopes or Access.ADMIN in scopes


# Upstream services by name (the names the health report and the logs use) → URL setting.
SERVICE_URL_SETTINGS: dict[str, str] = {
    "ingest": "ingest_url",
    "stream-processor": "stream_processor_url",
    "recommender": "recommender_url",
    "spotify-gateway": "spotify_gateway_url",
}

ANY_METHOD = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Route:
    """One public path and where it goes."""

    methods: frozenset[str]
    path: str
    service: str
    access: Access
    upstream_path: str | None = None  # None: the same path as the public one
    upload: bool = False  # large bodies: the longer upload timeout applies
    signs_out: bool = False  # the gateway also revokes the caller's session cookie
    # Methods safe to send a second time (to another replica) when the first attempt failed
    # before any answer: declared per route, because a POST may be idempotent too.
    idempotent: frozenset[str] = frozenset()

    @property
    def upstream_template(self) -> str:
        """The upstream path template (the public one unless the route rewrites it)."""
        return self.upstream_path or self.path

    def matches_upstream(self, method: str, upstream_path: str) -> bool:
        """Whether an upstream OpenAPI operation (method, path template) belongs to this route."""
        return method.upper() in self.methods and bool(
            _template_regex(self.upstream_template).fullmatch(upstream_path)
        )

    def public_path_for(self, upstream_path: str) -> str:
        """The public path of an upstream path this route matches."""
        # Same-path routes keep the upstream's own template so its parameter names still fit.
        return upstream_path if self.upstream_path is None else self.path


def _methods(*names: str) -> frozenset[str]:
    return frozenset(names)


_GET = _methods("GET", "HEAD")

ROUTES: tuple[Route, ...] = (
    Route(_methods("POST"), "/api/v1/songs", "ingest", Access.WRITE, upload=True),
    Route(_methods("POST"), "/api/v1/songs/upload", "ingest", Access.WRITE, upload=True),
    # Reads from the recommender's memory: any replica may answer them, twice if need be.
    Route(_methods("GET"), "/api/v1/songs", "recommender", Access.READ, idempotent=_GET),
    Route(_methods("GET"), "/api/v1/songs/{track_id}", "recommender", Access.READ, idempotent=_GET),
    Route(_methods("GET"), "/api/v1/catalog", "recommender", Access.READ, idempotent=_GET),
    # A POST only because the query is a document: it changes nothing.
    Route(
        _methods("POST"),
        "/api/v1/recommendations",
        "recommender",
        Access.READ,
        idempotent=_methods("POST"),
    ),
    Route(_methods("GET"), "/api/v1/model", "recommender", Access.READ, idempotent=_GET),
    Route(_methods("GET"), "/api/v1/clusters", "recommender", Access.READ, idempotent=_GET),
    # A listener's feedback: a signed-in listener acts for themselves, a key holder for the
    # listeners it names (namespaced by its key; see emergify_contracts.listener).
    Route(_methods("POST"), "/api/v1/feedback", "ingest", Access.READ),
    Route(_methods("GET"), "/api/v1/listeners/{listener_id}/feedback", "recommender", Access.READ),
    Route(_methods("DELETE"), "/api/v1/listeners/{listener_id}/feedback", "ingest", Access.READ),
    Route(
        _methods("POST"),
        "/api/v1/model/retrain",
        "stream-processor",
        Access.ADMIN,
        upstream_path="/admin/retrain",
    ),
    # Sign-in must work before the listener has anything to present.
    Route(
        _methods("GET"), "/api/v1/spotify/login", "spotify-gateway", Access.PUBLIC, idempotent=_GET
    ),
    # Not idempotent: the callback spends Spotify's one-time authorization code.
    Route(_methods("GET"), "/api/v1/spotify/callback", "spotify-gateway", Access.PUBLIC),
    # Signing out is a POST (a link or an image cannot sign anyone out); the gateway revokes
    # the session so a copied cookie stops working too.
    Route(
        _methods("POST"),
        "/api/v1/spotify/logout",
        "spotify-gateway",
        Access.PUBLIC,
        signs_out=True,
    ),
    # Key or session: /me*, and POST /playlists (saving a playlist in the listener's
    # own Spotify account changes nothing of Emergify's, so a session may do it).
    Route(
        ANY_METHOD,
        "/api/v1/spotify/{rest:path}",
        "spotify-gateway",
        Access.READ,
        idempotent=_methods("GET", "HEAD"),
    ),
)


def body_limit(settings: Settings, method: str, path: str) -> int:
    """The largest request body ``method path`` takes: uploads are large, the rest is JSON."""
    for route in ROUTES:
        if route.upload and method in route.methods and _template_regex(route.path).fullmatch(path):
            return settings.max_upload_bytes
    return settings.max_json_bytes


def service_urls(settings: Settings) -> dict[str, list[str]]:
    """Base URLs of every upstream service, by name: one each, several for recommender
    replicas."""
    urls = {
        name: [str(getattr(settings, setting)).rstrip("/")]
        for name, setting in SERVICE_URL_SETTINGS.items()
    }
    urls["recommender"] = settings.recommender_replicas()
    return urls


def route_for_upstream(
    routes: tuple[Route, ...], service: str, method: str, upstream_path: str
) -> Route | None:
    """The first route of ``service`` that an upstream operation belongs to, if any."""
    for route in routes:
        if route.service == service and route.matches_upstream(method, upstream_path):
            return route
    return None


@lru_cache
def _template_regex(template: str) -> re.Pattern[str]:
    """A regex for a path template; it also matches OpenAPI templates like ``/songs/{id}``."""
    pattern = ""
    for literal, param in re.findall(r"([^{]*)(\{[^}]*\})?", template):
        pattern += re.escape(literal)
        if param:
            pattern += ".+" if param.endswith(":path}") else "[^/]+"
    return re.compile(pattern)
