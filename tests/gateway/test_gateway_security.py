"""API keys, the upload size limit, rate limiting and CORS at the gateway."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emergify_gateway.config import ADMIN_KEY_PLACEHOLDER
from emergify_gateway.main import create_app
from emergify_gateway.rate_limit import TokenBucketLimiter
from emergify_gateway.security import AuthNotConfiguredError

SONGS = [{"track_id": "4uLU6hMCjMI75M1A2tKUQC", "name": "n", "artists": ["a"]}]


def test_write_without_key_is_401_with_challenge(gateway: TestClient) -> None:
    response = gateway.post("/api/v1/songs", json=SONGS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 401 and "X-API-Key" in problem["detail"]
    assert problem["instance"] == "/api/v1/songs"
    assert problem["request_id"] == response.headers["x-request-id"]


def test_write_with_read_key_is_403(gateway: TestClient, reader: dict[str, str]) -> None:
    for path, kwargs, scope in (
        ("/api/v1/songs", {"json": SONGS}, "catalog:write"),
        (
            "/api/v1/songs/upload",
            {"files": {"file": ("a.csv", b"x\n", "text/csv")}},
            "catalog:write",
        ),
        ("/api/v1/model/retrain", {}, "admin"),
    ):
        response = gateway.post(path, headers=reader, **kwargs)
        assert response.status_code == 403, path
        problem = response.json()
        assert problem["missing_scope"] == scope
        assert f"needs the scope '{scope}'" in problem["detail"]


def test_write_with_admin_key_passes(gateway: TestClient, admin: dict[str, str]) -> None:
    assert gateway.post("/api/v1/songs", json=SONGS, headers=admin).status_code == 202
    bearer = {"Authorization": f"Bearer {admin['X-API-Key']}"}
    assert gateway.post("/api/v1/model/retrain", headers=bearer).status_code == 202


def test_reads_need_a_valid_key(gateway: TestClient, reader: dict[str, str]) -> None:
    assert gateway.get("/api/v1/catalog").status_code == 401
    assert gateway.get("/api/v1/catalog", headers=reader).status_code == 200
    assert gateway.get("/api/v1/catalog", headers={"X-API-Key": "another-read-key-xyz"}).is_success
    wrong = gateway.get("/api/v1/catalog", headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401
    assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
    assert gateway.get("/api/v1/catalog", headers={"Authorization": "Basic abc"}).status_code == 401
    # A key that is not ASCII is just a wrong key, not a crash.
    odd = gateway.get("/api/v1/catalog", headers={"X-API-Key": "clé".encode()})
    assert odd.status_code == 401


def test_public_paths_need_no_key(gateway: TestClient) -> None:
    assert gateway.get("/openapi.json").status_code == 200
    assert gateway.get("/docs").status_code == 200
    assert gateway.get("/health").status_code == 200
    login = gateway.get("/api/v1/spotify/login", follow_redirects=False)
    assert login.status_code == 307
    # Everything else under /api/v1/spotify is a read.
    assert gateway.get("/api/v1/spotify/me").status_code == 401


def test_refuses_to_start_without_admin_key(make_settings: Callable[..., Any]) -> None:
    for key in (None, "", ADMIN_KEY_PLACEHOLDER):
        with pytest.raises(AuthNotConfiguredError, match="EMERGIFY_ADMIN_API_KEY"):
            create_app(make_settings(admin_api_key=key))


def test_allow_no_auth_opens_the_gateway(make_gateway: Callable[..., TestClient]) -> None:
    gateway = make_gateway(admin_api_key=None, allow_no_auth=True)
    assert gateway.post("/api/v1/songs", json=SONGS).status_code == 202
    assert gateway.get("/api/v1/catalog").status_code == 200


def test_body_over_limit_by_content_length_is_413_before_proxying(
    make_gateway: Callable[..., TestClient], upstreams: dict[str, Any], admin: dict[str, str]
) -> None:
    gateway = make_gateway(max_upload_bytes=1000)
    before = len(upstreams["ingest"].seen)
    response = gateway.post(
        "/api/v1/songs/upload",
        headers=admin,
        files={"file": ("big.csv", b"x" * 5000, "text/csv")},
    )
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["max_bytes"] == 1000
    assert len(upstreams["ingest"].seen) == before  # never forwarded


def test_streamed_body_over_limit_is_413(
    make_gateway: Callable[..., TestClient], admin: dict[str, str]
) -> None:
    gateway = make_gateway(max_upload_bytes=1000)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the gateway has to count
        for _ in range(10):
            yield b"y" * 400

    response = gateway.post(
        "/api/v1/songs",
        headers={**admin, "Content-Type": "application/json"},
        content=chunks(),
    )
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]


def test_rate_limit_answers_429_with_retry_after(
    make_gateway: Callable[..., TestClient], reader: dict[str, str]
) -> None:
    # One token a minute after a burst of two: the third call is refused whatever the timing.
    gateway = make_gateway(rate_limit_per_minute=1, rate_limit_burst=2)
    assert gateway.get("/api/v1/model", headers=reader).status_code == 200
    assert gateway.get("/api/v1/model", headers=reader).status_code == 200
    limited = gateway.get("/api/v1/model", headers=reader)
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/problem+json"
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    # Callers without a key are limited per address: their own bucket.
    assert gateway.get("/api/v1/model").status_code == 401
    # /health stays reachable for probes.
    assert gateway.get("/health").status_code == 200


def test_token_bucket_refills_and_refusals_cost_nothing() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.acquire("ip:a") == 0
    assert limiter.acquire("ip:a") == 0
    assert limiter.acquire("ip:a") == pytest.approx(1.0)
    assert limiter.acquire("ip:b") == 0  # another identity has its own bucket
    now[0] = 0.5
    assert limiter.acquire("ip:a") == pytest.approx(0.5)  # the refusal above took nothing
    now[0] = 1.0
    assert limiter.acquire("ip:a") == 0
    # An identity's own rate: 0 is unlimited, a higher rate refills faster.
    assert all(limiter.acquire("key:admin", 0) == 0 for _ in range(100))
    assert limiter.acquire("key:k", 120) == 0
    assert limiter.acquire("key:k", 120) == 0
    assert limiter.acquire("key:k", 120) == pytest.approx(0.5)


def test_token_bucket_forgets_idle_identities() -> None:
    now = [0.0]
    limiter = TokenBucketLimiter(per_minute=60, burst=1, clock=lambda: now[0], max_identities=4)
    for n in range(4):
        limiter.acquire(f"ip:{n}")
    now[0] = 10.0  # all refilled: forgetting them changes nothing
    limiter.acquire("ip:new")
    assert len(limiter._buckets) == 1


def test_rate_limit_zero_disables(make_gateway: Callable[..., TestClient]) -> None:
    gateway = make_gateway(rate_limit_per_minute=0, rate_limit_burst=1)
    assert all(gateway.get("/api/v1/model").status_code == 401 for _ in range(5))


def test_cors_allows_only_the_dashboard(
    make_gateway: Callable[..., TestClient], admin: dict[str, str]
) -> None:
    gateway = make_gateway(dashboard_origin="http://127.0.0.1:8501")
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    ok = gateway.options(
        "/api/v1/recommendations", headers={"Origin": "http://127.0.0.1:8501", **preflight}
    )
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "http://127.0.0.1:8501"
    bad = gateway.options(
        "/api/v1/recommendations", headers={"Origin": "https://evil.example", **preflight}
    )
    assert "access-control-allow-origin" not in bad.headers
    simple = gateway.get("/api/v1/model", headers={**admin, "Origin": "http://127.0.0.1:8501"})
    assert simple.headers["access-control-allow-origin"] == "http://127.0.0.1:8501"
    assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
}
API_CSP = "default-src 'none'; frame-ancestors 'none'"


def test_security_headers_on_every_kind_of_response(
    make_gateway: Callable[..., TestClient],
    admin: dict[str, str],
    reader: dict[str, str],
    closed_url: str,
) -> None:
    gateway = make_gateway(
        rate_limit_per_minute=1, rate_limit_burst=8, max_json_bytes=10, ingest_url=closed_url
    )
    preflight = {
        "Origin": "http://127.0.0.1:8501",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key",
    }
    responses = {
        "proxied 200": gateway.get("/api/v1/model", headers=admin),
        "upstream problem": gateway.get("/api/v1/songs/missing", headers=admin),
        "401": gateway.get("/api/v1/model"),
        "404": gateway.get("/nothing/here"),
        "405": gateway.delete("/api/v1/catalog", headers=admin),
        "413": gateway.post("/api/v1/recommendations", headers=admin, json={"seeds": ["x" * 20]}),
        "503": gateway.post("/api/v1/songs", headers=admin),  # bodiless: under the limit
        "health": gateway.get("/health"),
        "openapi": gateway.get("/openapi.json"),
        "preflight": gateway.options("/api/v1/model", headers=preflight),
    }
    while (limited := gateway.get("/api/v1/model", headers=reader)).status_code != 429:
        pass
    responses["429"] = limited
    expected_status = {"proxied 200": 200, "upstream problem": 404, "401": 401, "404": 404,
                       "405": 405, "413": 413, "503": 503, "preflight": 200}  # fmt: skip
    for name, response in responses.items():
        if name in expected_status:
            assert response.status_code == expected_status[name], name
        for header, value in SECURITY_HEADERS.items():
            assert response.headers.get(header) == value, (name, header)
        assert response.headers["content-security-policy"] == API_CSP, name
        assert "strict-transport-security" not in response.headers, name  # plain http


def test_docs_policy_allows_exactly_what_swagger_ui_loads(gateway: TestClient) -> None:
    response = gateway.get("/docs")
    policy = response.headers["content-security-policy"]
    csp = {
        name: values
        for name, _, values in (part.strip().partition(" ") for part in policy.split(";"))
    }
    html = response.text
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    # Every file the page loads comes from the gateway itself; no other host is allowed.
    srcs = re.findall(r'<script src="([^"]+)"', html)
    sheets = re.findall(r'rel="stylesheet" href="([^"]+)"', html)
    assert srcs == ["/docs/assets/swagger-ui-bundle.js"]
    assert sheets == ["/docs/assets/swagger-ui.css"]
    assert "http" not in policy
    for asset in (*srcs, *sheets):
        assert gateway.get(asset).status_code == 200, asset
    script_src = csp["script-src"].split()
    assert csp["style-src"] == "'self'"
    # The inline script that starts Swagger UI runs because its hash is allowed.
    [inline] = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
    assert script_src == ["'self'", f"'sha256-{digest}'"]
    assert '"persistAuthorization": true' not in html
    assert "unsafe-inline" not in policy
    assert csp["connect-src"] == "'self'"  # /openapi.json and "Try it out"
    assert response.headers["x-frame-options"] == "DENY"


def test_authenticated_responses_are_not_cached(
    gateway: TestClient, reader: dict[str, str]
) -> None:
    assert gateway.get("/api/v1/model", headers=reader).headers["cache-control"] == "no-store"
    wrong = gateway.get("/api/v1/model", headers={"X-API-Key": "nope"})
    assert wrong.headers["cache-control"] == "no-store"
    session = gateway.get("/api/v1/spotify/me", headers={"Cookie": "emergify_session=x"})
    assert session.headers["cache-control"] == "no-store"
    assert "no-store" not in gateway.get("/health").headers.get("cache-control", "")


def test_hsts_only_over_https_or_when_forced(make_gateway: Callable[..., TestClient]) -> None:
    gateway = make_gateway()
    assert "strict-transport-security" not in gateway.get("/health").headers
    over_tls = gateway.get("https://testserver/health").headers
    assert over_tls["strict-transport-security"].startswith("max-age=31536000")
    forced = make_gateway(force_hsts=True).get("/health").headers
    assert forced["strict-transport-security"].startswith("max-age=")
