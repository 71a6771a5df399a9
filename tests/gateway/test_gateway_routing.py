"""Every public route reaches the right service, path and method; answers come back unchanged."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import structlog.testing
from fastapi.testclient import TestClient

from emergify_gateway.main import create_app
from emergify_gateway.routes import ROUTES, Access

SONG = {"track_id": "4uLU6hMCjMI75M1A2tKUQC", "name": "n", "artists": ["a"]}
CSV = b"Spotify ID,Track Name\n4uLU6hMCjMI75M1A2tKUQC,n\n"

# (method, public path, request body kwargs, service, path the service must see, status)
PUBLIC_CALLS: list[tuple[str, str, dict[str, Any], str, str, int]] = [
    ("POST", "/api/v1/songs", {"json": [SONG]}, "ingest", "/api/v1/songs", 202),
    ("POST", "/api/v1/songs/upload", {"files": {"file": ("s.csv", CSV, "text/csv")}},
     "ingest", "/api/v1/songs/upload", 202),
    ("GET", "/api/v1/songs?q=bon&limit=5", {}, "recommender", "/api/v1/songs", 200),
    ("GET", "/api/v1/songs/4uLU6hMCjMI75M1A2tKUQC", {}, "recommender",
     "/api/v1/songs/4uLU6hMCjMI75M1A2tKUQC", 200),
    ("GET", "/api/v1/catalog", {}, "recommender", "/api/v1/catalog", 200),
    ("POST", "/api/v1/recommendations", {"json": {"seeds": ["a", "b"]}}, "recommender",
     "/api/v1/recommendations", 200),
    ("GET", "/api/v1/model", {}, "recommender", "/api/v1/model", 200),
    ("GET", "/api/v1/clusters", {}, "recommender", "/api/v1/clusters", 200),
    ("POST", "/api/v1/model/retrain", {}, "stream-processor", "/admin/retrain", 202),
    ("POST", "/api/v1/feedback", {"json": {"track_id": "a", "signal": "like"}}, "ingest",
     "/api/v1/feedback", 202),
    ("GET", "/api/v1/spotify/me", {}, "spotify-gateway", "/api/v1/spotify/me", 200),
    ("POST", "/api/v1/spotify/playlists", {"json": {"name": "p", "track_ids": ["a"]}},
     "spotify-gateway", "/api/v1/spotify/playlists", 201),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "service", "upstream_path", "status"),
    PUBLIC_CALLS,
    ids=[f"{c[0]} {c[1]}" for c in PUBLIC_CALLS],
)
def test_public_route_reaches_its_service(
    gateway: TestClient,
    upstreams: dict[str, Any],
    admin: dict[str, str],
    method: str,
    path: str,
    body: dict[str, Any],
    service: str,
    upstream_path: str,
    status: int,
) -> None:
    request_id = uuid.uuid4().hex
    response = gateway.request(method, path, **body, headers={**admin, "X-Request-ID": request_id})
    assert response.status_code == status, response.text
    seen = upstreams[service].request_with_id(request_id)
    assert seen["method"] == method
    assert seen["path"] == upstream_path
    assert seen["query"] == httpx.URL(path).query.decode()
    for other, server in upstreams.items():
        if other != service:
            assert not [r for r in server.seen if r["headers"].get("x-request-id") == request_id]


def test_every_non_catch_all_route_is_exercised() -> None:
    exercised = {(c[0], httpx.URL(c[1]).path) for c in PUBLIC_CALLS}
    for route in ROUTES:
        if "{" in route.path or route.access is Access.PUBLIC:
            continue  # templated / sign-in routes have their own tests
        for method in route.methods:
            assert (method, route.path) in exercised, f"{method} {route.path} untested"


def test_upstream_problem_passes_through_unchanged(
    gateway: TestClient, upstreams: dict[str, Any], admin: dict[str, str]
) -> None:
    response = gateway.get("/api/v1/songs/missing", headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json() == upstreams["recommender"].app.state.missing_problem
    # The gateway's request id wins over whatever the service sent.
    assert response.headers.get_list("x-request-id") != ["upstream-must-not-win"]
    assert len(response.headers.get_list("x-request-id")) == 1


def test_forwarded_headers_hide_keys_and_hop_by_hop(
    gateway: TestClient, upstreams: dict[str, Any], admin: dict[str, str]
) -> None:
    request_id = uuid.uuid4().hex
    response = gateway.get(
        "/api/v1/model",
        headers={
            "Authorization": f"Bearer {admin['X-API-Key']}",
            "X-Request-ID": request_id,
            "Connection": "keep-alive, X-Per-Hop",
            "X-Per-Hop": "secret",
            "X-Emergify-Principal": "admin-forged",
            "Accept-Language": "nl",
        },
    )
    assert response.status_code == 200
    seen = upstreams["recommender"].request_with_id(request_id)["headers"]
    assert "authorization" not in seen
    assert "x-api-key" not in seen
    assert "x-per-hop" not in seen
    assert seen["x-emergify-principal"] == "admin"  # the gateway's word, not the client's
    assert seen["accept-language"] == "nl"
    assert seen["x-forwarded-for"] == "testclient"


def test_request_id_kept_when_sane_else_generated(
    gateway: TestClient, upstreams: dict[str, Any], admin: dict[str, str]
) -> None:
    kept = gateway.get("/api/v1/model", headers={**admin, "X-Request-ID": "abc-123.x:y"})
    assert kept.headers["x-request-id"] == "abc-123.x:y"
    upstreams["recommender"].request_with_id("abc-123.x:y")

    insane = "a" * 300
    replaced = gateway.get("/api/v1/model", headers={**admin, "X-Request-ID": insane})
    new_id = replaced.headers["x-request-id"]
    assert new_id != insane and len(new_id) == 32
    upstreams["recommender"].request_with_id(new_id)

    generated = gateway.get("/api/v1/catalog", headers=admin)
    upstreams["recommender"].request_with_id(generated.headers["x-request-id"])

    problem = gateway.get("/api/v1/catalog", headers={"X-Request-ID": "req-401"})
    assert problem.status_code == 401
    assert problem.json()["request_id"] == "req-401"
    assert problem.json()["instance"] == "/api/v1/catalog"


def test_spotify_sign_in_is_public_and_keeps_cookies_and_redirects(
    gateway: TestClient, upstreams: dict[str, Any]
) -> None:
    login = gateway.get("/api/v1/spotify/login", follow_redirects=False)
    assert login.status_code == 307
    assert login.headers["location"].startswith("https://accounts.spotify.com/authorize?")
    cookies = login.headers.get_list("set-cookie")
    assert any(c.startswith("oauth_state=s1") for c in cookies)
    assert any(c.startswith("pkce_verifier=v1") for c in cookies)

    callback = gateway.get(
        "/api/v1/spotify/callback?code=c0de&state=s1",
        headers={"Cookie": "oauth_state=s1; pkce_verifier=v1"},
        follow_redirects=False,
    )
    assert callback.status_code == 307
    # The service redirected to its own address; the client must stay on the gateway.
    assert callback.headers["location"] == "/api/v1/spotify/me"
    assert "emergify_session=c0de-s1" in callback.headers["set-cookie"]
    seen = upstreams["spotify-gateway"].request_with_id(callback.headers["x-request-id"])
    assert seen["query"] == "code=c0de&state=s1"
    assert seen["headers"]["cookie"] == "oauth_state=s1; pkce_verifier=v1"


def test_spotify_reads_forward_cookies(gateway: TestClient, admin: dict[str, str]) -> None:
    me = gateway.get("/api/v1/spotify/me", headers={**admin, "Cookie": "emergify_session=abc"})
    assert me.status_code == 200
    assert me.json()["cookies"] == {"emergify_session": "abc"}


def test_unknown_path_is_a_problem(gateway: TestClient, admin: dict[str, str]) -> None:
    response = gateway.get("/api/v1/nothing-here", headers=admin)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["instance"] == "/api/v1/nothing-here"
    wrong_method = gateway.delete("/api/v1/catalog", headers=admin)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["title"] == "Method Not Allowed"


def test_big_upload_streams_through_real_http(
    upstreams: dict[str, Any],
    make_settings: Callable[..., Any],
    serve: Callable[[Any], Any],
    admin: dict[str, str],
) -> None:
    """A multi-MB multipart CSV sent chunked through a gateway served by uvicorn."""
    gateway = serve(create_app(make_settings()))
    boundary = "emergify-test-boundary"
    payload = os.urandom(12 * 1024 * 1024)  # random: no compression could hide buffering

    def multipart_chunks():  # type: ignore[no-untyped-def]
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="songs.csv"\r\nContent-Type: text/csv\r\n\r\n'
        ).encode()
        for start in range(0, len(payload), 256 * 1024):
            yield payload[start : start + 256 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    request_id = uuid.uuid4().hex
    response = httpx.post(
        f"{gateway.url}/api/v1/songs/upload",
        content=multipart_chunks(),
        headers={
            **admin,
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "X-Request-ID": request_id,
        },
        timeout=60,
    )
    assert response.status_code == 202, response.text
    report = response.json()
    assert report["size"] == len(payload)
    assert report["sha256"] == hashlib.sha256(payload).hexdigest()
    seen = upstreams["ingest"].request_with_id(request_id)
    assert seen["body_bytes"] > len(payload)
    # The body reached the service in many pieces, as it was sent: it was streamed on,
    # not collected in the gateway and sent in one go.
    assert seen["body_messages"] > 1


def test_one_log_line_per_request_never_the_key(gateway: TestClient, admin: dict[str, str]) -> None:
    with structlog.testing.capture_logs() as logs:
        gateway.get("/api/v1/model?secret=query", headers={**admin, "X-Request-ID": "log-1"})
        gateway.get("/api/v1/model", headers={"X-API-Key": "wrong-key", "X-Request-ID": "log-2"})
    lines = [entry for entry in logs if entry["event"] == "request"]
    assert [(e["request_id"], e["status"], e["key_id"]) for e in lines] == [
        ("log-1", 200, "admin"),
        ("log-2", 401, None),
    ]
    assert all(e["method"] == "GET" and e["path"] == "/api/v1/model" for e in lines)
    assert all(isinstance(e["ms"], float) for e in lines)
    text = repr(logs)
    assert admin["X-API-Key"] not in text and "wrong-key" not in text
    assert "secret=query" not in text
