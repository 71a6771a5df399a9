"""The merged OpenAPI document: every public path, valid references, the gateway's contract."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient

from emergify_gateway.openapi import merge_openapi
from emergify_gateway.routes import ROUTES, Access, Route

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"external $ref {ref}"
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"dangling $ref {ref}"
        node = node[part]
    return node


def test_merged_document_has_every_public_path(gateway: TestClient) -> None:
    response = gateway.get("/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.")
    assert doc["info"]["x-unavailable"] == []
    expected = {
        ("/health", "get"),
        ("/api/v1/songs", "post"),
        ("/api/v1/songs/upload", "post"),
        ("/api/v1/songs", "get"),
        ("/api/v1/songs/{track_id}", "get"),
        ("/api/v1/catalog", "get"),
        ("/api/v1/recommendations", "post"),
        ("/api/v1/model", "get"),
        ("/api/v1/clusters", "get"),
        ("/api/v1/feedback", "post"),
        ("/api/v1/listeners/{listener_id}/feedback", "delete"),
        ("/api/v1/listeners/{listener_id}/feedback", "get"),
        ("/api/v1/model/retrain", "post"),
        ("/api/v1/spotify/login", "get"),
        ("/api/v1/spotify/callback", "get"),
        ("/api/v1/spotify/me", "get"),
        ("/api/v1/spotify/logout", "post"),
        ("/api/v1/spotify/playlists", "post"),
        ("/api/v1/admin/keys", "post"),
        ("/api/v1/admin/keys", "get"),
        ("/api/v1/admin/keys/{key_id}", "delete"),
        ("/api/v1/admin/keys/{key_id}/rotate", "post"),
    }
    present = {(path, method) for path, method, _ in operations(doc)}
    assert present == expected  # and nothing else: no /admin/retrain, /internal, upstream /health
    for route in ROUTES:
        if "{rest:path}" not in route.path:
            for method in route.methods:
                assert (route.path, method.lower()) in present


def test_operations_have_schemas_and_unique_ids(gateway: TestClient) -> None:
    doc = gateway.get("/openapi.json").json()
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids))
    for path, method, op in operations(doc):
        success = [code for code in op["responses"] if code[0] in "23"]  # 307: sign-in
        assert success, f"{method} {path} documents no success response"
        if method == "post" and path not in ("/api/v1/model/retrain", "/api/v1/spotify/logout"):
            content = op["requestBody"]["content"]
            assert any("schema" in media for media in content.values()), f"{method} {path}"
    upload = doc["paths"]["/api/v1/songs/upload"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in upload
    recommend = doc["paths"]["/api/v1/recommendations"]["post"]
    body_ref = recommend["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert resolve(doc, body_ref)["properties"]["seeds"]["type"] == "array"


def test_every_ref_resolves(gateway: TestClient) -> None:
    doc = gateway.get("/openapi.json").json()
    all_refs = list(refs(doc))
    assert all_refs
    for ref in all_refs:
        resolve(doc, ref)


def test_clashing_schemas_are_prefixed_with_the_service(gateway: TestClient) -> None:
    doc = gateway.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    # ingest's Song came first and keeps its name; the recommender's different Song is renamed.
    assert "artists" in schemas["Song"]["properties"]
    assert "cluster" in schemas["RecommenderSong"]["properties"]
    page_ref = doc["paths"]["/api/v1/songs"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]["$ref"]
    page = resolve(doc, page_ref)
    assert page["properties"]["items"]["items"]["$ref"] == "#/components/schemas/RecommenderSong"
    # The gateway's Problem stays; the recommender's own Problem is kept under a new name.
    assert "request_id" in schemas["Problem"]["properties"]
    song = doc["paths"]["/api/v1/songs/{track_id}"]["get"]["responses"]
    assert song["404"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/RecommenderProblem"
    )
    # Identical schemas are shared, not duplicated.
    assert "IngestHTTPValidationError" not in schemas
    assert "RecommenderHTTPValidationError" not in schemas


def test_security_and_gateway_problems_are_documented(gateway: TestClient) -> None:
    doc = gateway.get("/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKeyHeader"] == {**schemes["ApiKeyHeader"], "type": "apiKey", "in": "header",
                                       "name": "X-API-Key"}  # fmt: skip
    assert schemes["BearerAuth"]["scheme"] == "bearer"
    public = {"/health", "/api/v1/spotify/login", "/api/v1/spotify/callback",
              "/api/v1/spotify/logout"}  # fmt: skip
    for path, method, op in operations(doc):
        codes = op["responses"]
        if path in public:
            assert op["security"] == [], path
            continue
        assert {"ApiKeyHeader": []} in op["security"] and {"BearerAuth": []} in op["security"]
        # The gateway's own key endpoints call no upstream, so they cannot answer 503.
        own = path.startswith("/api/v1/admin/")
        for code in ("401", "403", "429") if own else ("401", "403", "429", "503"):
            assert code in codes, f"{method} {path} lacks {code}"
            assert codes[code]["content"]["application/problem+json"]["schema"] == {
                "$ref": "#/components/schemas/Problem"
            }
        assert "Retry-After" in codes["429"]["headers"]
        assert own or "Retry-After" in codes["503"]["headers"]
        assert op["x-emergify-scope"] in ("recs:read", "catalog:write", "admin"), path


def test_document_served_while_services_are_down(
    make_gateway: Callable[..., TestClient], closed_url: str
) -> None:
    gateway = make_gateway(recommender_url=closed_url, spotify_gateway_url=closed_url)
    doc = gateway.get("/openapi.json").json()
    assert doc["info"]["x-unavailable"] == ["recommender", "spotify-gateway"]
    paths = set(doc["paths"])
    assert "/api/v1/songs/upload" in paths and "/api/v1/model/retrain" in paths
    assert "/api/v1/catalog" not in paths
    for ref in refs(doc):
        resolve(doc, ref)


def test_docs_is_swagger_ui(gateway: TestClient) -> None:
    response = gateway.get("/docs")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in response.text.lower()
    assert "/openapi.json" in response.text


def test_renames_follow_references_transitively() -> None:
    """A schema that refers to a renamed schema differs from its namesake, so it is renamed too."""

    def doc(path: str, schemas: dict[str, Any]) -> dict[str, Any]:
        ref = {"$ref": "#/components/schemas/Outer"}
        op = {"operationId": "x", "responses": {"200": {"content": {"application/json": {
            "schema": ref}}}}}  # fmt: skip
        return {"paths": {path: {"get": op}}, "components": {"schemas": schemas}}

    outer = {"type": "object", "properties": {"inner": {"$ref": "#/components/schemas/Inner"}}}
    routes = (
        Route(frozenset({"GET"}), "/a", "first", Access.READ),
        Route(frozenset({"GET"}), "/b", "second-svc", Access.READ),
    )
    merged = merge_openapi(
        {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {}},
        {
            "first": doc("/a", {"Outer": outer, "Inner": {"type": "string"}}),
            "second-svc": doc("/b", {"Outer": outer, "Inner": {"type": "integer"}}),
        },
        routes,
    )
    schemas = merged["components"]["schemas"]
    assert schemas["Inner"] == {"type": "string"}
    assert schemas["SecondSvcInner"] == {"type": "integer"}
    assert schemas["SecondSvcOuter"]["properties"]["inner"]["$ref"].endswith("/SecondSvcInner")
    b_schema = merged["paths"]["/b"]["get"]["responses"]["200"]["content"]["application/json"]
    assert b_schema["schema"]["$ref"] == "#/components/schemas/SecondSvcOuter"
    assert merged["paths"]["/b"]["get"]["operationId"] == "second-svc-x"
    for ref in refs(merged):
        resolve(merged, ref)


def test_document_is_cached_for_the_ttl(
    make_gateway: Callable[..., TestClient], upstreams: dict[str, Any]
) -> None:
    def fetches() -> int:
        return sum(1 for r in upstreams["ingest"].seen if r["path"] == "/openapi.json")

    cached = make_gateway(openapi_cache_seconds=3600)
    before = fetches()
    first = cached.get("/openapi.json").json()
    assert fetches() == before + 1  # fetched lazily, on the first request
    assert cached.get("/openapi.json").json() == first
    assert fetches() == before + 1  # reused

    uncached = make_gateway(openapi_cache_seconds=0)
    uncached.get("/openapi.json")
    uncached.get("/openapi.json")
    assert fetches() == before + 3
