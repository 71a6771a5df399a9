"""One OpenAPI document for the whole public API, merged from the services' own documents.

Each upstream's ``/openapi.json`` is fetched lazily (the gateway starts while services are
still down) and cached briefly. Only operations the routing table exposes are kept, under their
public paths; schemas are merged, and a schema name two services use for different things is
prefixed with the service's name. The gateway adds what it enforces: the API-key security
schemes and the problems it can answer with (401, 403, 413, 429, 503, 504).
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import structlog
from pydantic import ConfigDict, Field

from emergify_contracts.problems import PROBLEM_MEDIA_TYPE, Problem
from emergify_gateway.routes import Access, Route, route_for_upstream

SCHEMA_REF_PREFIX = "#/components/schemas/"
HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKeyHeader": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An Emergify API key with the scope the operation names "
        "(recs:read, catalog:write or admin; admin implies the others).",
    },
    "BearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "The same API key, sent as 'Authorization: Bearer <key>'.",
    },
}
KEY_REQUIRED = [{"ApiKeyHeader": []}, {"BearerAuth": []}]

log = structlog.get_logger()


class GatewayProblem(Problem):
    """The problems the gateway makes: the shared document plus the request's id."""

    model_config = ConfigDict(title="Problem")

    request_id: str | None = Field(None, description="The X-Request-ID of the request.")


def problem_openapi_response(description: str, headers: dict[str, str] | None = None) -> dict:
    """An OpenAPI response object whose body is a gateway :class:`GatewayProblem`."""
    response: dict[str, Any] = {
        "description": description,
        "content": {PROBLEM_MEDIA_TYPE: {"schema": {"$ref": SCHEMA_REF_PREFIX + "Problem"}}},
    }
    if headers:
        response["headers"] = {
            name: {"description": text, "schema": {"type": "string"}}
            for name, text in headers.items()
        }
    return response


def merge_openapi(
    base: dict[str, Any],
    upstream_docs: Mapping[str, dict[str, Any] | None],
    routes: tuple[Route, ...],
) -> dict[str, Any]:
    """The public document: ``base`` (the gateway's own paths) plus the routed upstream paths.

    ``upstream_docs`` maps service name → its OpenAPI document, or None when it could not be
    fetched; those services are listed in ``info.x-unavailable``.
    """
    doc = copy.deepcopy(base)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.setdefault(
        "Problem", GatewayProblem.model_json_schema(ref_template=SCHEMA_REF_PREFIX + "{model}")
    )
    components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
    for item in doc.get("paths", {}).values():
        for method, operation in item.items():
            if method in HTTP_METHODS:
                operation.setdefault("security", [])  # the gateway's own paths are public
    paths: dict[str, tuple[int, dict[str, Any]]] = {}
    operation_ids = _operation_ids(doc)
    tags = {tag["name"]: tag for tag in doc.get("tags", [])}
    unavailable = []

    for service, upstream in upstream_docs.items():
        if upstream is None:
            unavailable.append(service)
            continue
        up_components = upstream.get("components", {})
        up_schemas = up_components.get("schemas", {})
        renames = _plan_renames(service, up_schemas, schemas)
        for name, schema in up_schemas.items():
            schemas[renames.get(name, name)] = _rewrite_refs(schema, renames)
        for section, entries in up_components.items():
            if section not in ("schemas", "securitySchemes"):
                components.setdefault(section, {}).update(
                    {k: v for k, v in entries.items() if k not in components.get(section, {})}
                )
        for tag in upstream.get("tags", []):
            tags.setdefault(tag["name"], tag)
        for upstream_path, item in upstream.get("paths", {}).items():
            for method, operation in item.items():
                if method not in HTTP_METHODS:
                    continue
                route = route_for_upstream(routes, service, method, upstream_path)
                if route is None:
                    continue  # not exposed through the gateway (/health, internals)
                public = route.public_path_for(upstream_path)
                op = _rewrite_refs(operation, renames)
                _add_gateway_contract(op, route)
                if "operationId" in op:
                    if op["operationId"] in operation_ids:
                        op["operationId"] = f"{service}-{op['operationId']}"
                    operation_ids.add(op["operationId"])
                _order, public_item = paths.setdefault(public, (routes.index(route), {}))
                public_item[method] = op
                for key in ("parameters", "summary", "description"):
                    if key in item:
                        public_item.setdefault(key, _rewrite_refs(item[key], renames))

    doc["paths"] = dict(doc.get("paths", {}))
    for public, (_order, item) in sorted(paths.items(), key=lambda kv: (kv[1][0], kv[0])):
        doc["paths"][public] = item
    _drop_unused_upstream_schemas(doc, keep=set(base.get("components", {}).get("schemas", {})))
    if tags:
        doc["tags"] = list(tags.values())
    doc.setdefault("info", {})["x-unavailable"] = sorted(unavailable)
    return doc


def _drop_unused_upstream_schemas(doc: dict[str, Any], keep: set[str]) -> None:
    """Remove upstream schemas no public operation uses (those of /health, internal paths)."""
    schemas = doc["components"]["schemas"]
    reachable = set(keep) | {"Problem"}
    pending = [ref for item in doc["paths"].values() for ref in _schema_refs(item)]
    while pending:
        name = pending.pop()
        if name not in reachable and name in schemas:
            reachable.add(name)
            pending.extend(_schema_refs(schemas[name]))
    for name in [n for n in schemas if n not in reachable]:
        del schemas[name]


def _schema_refs(node: Any) -> list[str]:
    """Names of the schemas ``node`` refers to directly."""
    if isinstance(node, dict):
        found = []
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_REF_PREFIX):
                found.append(value.removeprefix(SCHEMA_REF_PREFIX))
            else:
                found.extend(_schema_refs(value))
        return found
    if isinstance(node, list):
        return [name for value in node for name in _schema_refs(value)]
    return []


def _add_gateway_contract(operation: dict[str, Any], route: Route) -> None:
    """Document what the gateway enforces on ``route``."""
    responses = operation.setdefault("responses", {})
    if route.access is Access.PUBLIC:
        operation["security"] = []
    else:
        operation["security"] = copy.deepcopy(KEY_REQUIRED)
        responses.setdefault(
            "401",
            problem_openapi_response(
                "No API key, or not a valid one.",
                {"WWW-Authenticate": "The authentication scheme to use (Bearer)."},
            ),
        )
    if route.access is not Access.PUBLIC:
        scope = route.access.value
        responses.setdefault(
            "403",
            problem_openapi_response(f"The caller lacks the scope '{scope}' (or 'admin')."),
        )
        operation["x-emergify-scope"] = scope
        operation["description"] = (
            operation.get("description", "") + f"\n\nNeeds the scope '{scope}' (or 'admin')."
        ).strip()
    if "requestBody" in operation:
        responses.setdefault(
            "413", problem_openapi_response("The body is over the gateway's upload limit.")
        )
    retry = {"Retry-After": "Seconds to wait before trying again."}
    responses.setdefault(
        "429", problem_openapi_response("Too many requests from this key or address.", retry)
    )
    responses.setdefault(
        "503", problem_openapi_response("The service behind this path is unavailable.", retry)
    )
    responses.setdefault(
        "504", problem_openapi_response("The service behind this path did not answer in time.")
    )


def _plan_renames(
    service: str, incoming: Mapping[str, Any], existing: Mapping[str, Any]
) -> dict[str, str]:
    """New names for the incoming schemas that clash with a different existing schema.

    Iterates to a fixed point: renaming one schema changes the ``$ref``s inside the schemas
    that use it, which may make those differ from their namesakes too.
    """
    prefix = "".join(part.capitalize() for part in service.split("-"))
    renames: dict[str, str] = {}
    changed = True
    while changed:
        changed = False
        for name, schema in incoming.items():
            if name in renames or name not in existing:
                continue
            if existing[name] != _rewrite_refs(schema, renames):
                new = prefix + name
                taken = set(existing) | set(incoming) | set(renames.values())
                suffix = 2
                while new in taken:
                    new, suffix = f"{prefix}{name}{suffix}", suffix + 1
                renames[name] = new
                changed = True
    return renames


def _rewrite_refs(node: Any, renames: Mapping[str, str]) -> Any:
    """A deep copy of ``node`` with ``$ref``s to renamed schemas pointing at the new names."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(SCHEMA_REF_PREFIX):
                name = value.removeprefix(SCHEMA_REF_PREFIX)
                out[key] = SCHEMA_REF_PREFIX + renames.get(name, name)
            else:
                out[key] = _rewrite_refs(value, renames)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(value, renames) for value in node]
    return node


def _operation_ids(doc: dict[str, Any]) -> set[str]:
    return {
        op["operationId"]
        for item in doc.get("paths", {}).values()
        for method, op in item.items()
        if method in HTTP_METHODS and "operationId" in op
    }


class OpenAPIAggregator:
    """Builds the merged document on demand and reuses it for ``ttl_seconds``."""

    def __init__(
        self,
        *,
        base: Callable[[], dict[str, Any]],
        client: httpx.AsyncClient,
        urls: Mapping[str, str],
        routes: tuple[Route, ...],
        timeout: float,
        ttl_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base = base
        self._client = client
        self._urls = urls  # looked up at each fetch: a live replica's address
        self._routes = routes
        self._timeout = timeout
        self._ttl = ttl_seconds
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        """The merged document, rebuilt when the cached one is older than the TTL."""
        async with self._lock:  # one rebuild at a time, however many clients ask
            now = self._clock()
            if self._cached is not None and now < self._cached[0]:
                return self._cached[1]
            names = list(self._urls)
            fetched = await asyncio.gather(*(self._fetch(name) for name in names))
            doc = merge_openapi(self._base(), dict(zip(names, fetched, strict=True)), self._routes)
            self._cached = (self._clock() + self._ttl, doc)
            return doc

    async def _fetch(self, service: str) -> dict[str, Any] | None:
        try:
            response = await self._client.get(
                f"{self._urls[service]}/openapi.json", timeout=self._timeout
            )
            response.raise_for_status()
            doc = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.info("openapi of service unavailable", service=service, error=repr(exc))
            return None
        return doc if isinstance(doc, dict) and isinstance(doc.get("paths"), dict) else None
