"""Upstream trouble becomes a clear problem: 503 when a service is down, 504 when it is slow."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient


def test_service_down_is_503_with_retry_after(
    make_gateway: Callable[..., TestClient], closed_url: str, admin: dict[str, str]
) -> None:
    gateway = make_gateway(recommender_url=closed_url, ingest_url=closed_url)
    for method, path, service in (
        ("GET", "/api/v1/catalog", "recommender"),
        ("POST", "/api/v1/songs", "ingest"),
    ):
        response = gateway.request(method, path, headers=admin, json=[])
        assert response.status_code == 503, path
        assert response.headers["retry-after"] == "5"
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == 503
        assert "is unavailable" in problem["detail"]
        assert problem["service"] == service
        assert problem["request_id"] == response.headers["x-request-id"]
    # The other services are unaffected.
    assert gateway.post("/api/v1/model/retrain", headers=admin).status_code == 202


def test_slow_service_is_504(
    make_gateway: Callable[..., TestClient], admin: dict[str, str]
) -> None:
    gateway = make_gateway(upstream_timeout_seconds=0.3)
    response = gateway.get("/api/v1/catalog?sleep=2", headers=admin)
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["service"] == "recommender"
    assert "did not answer within 0.3 s" in problem["detail"]
    # Within the timeout, the same path answers normally.
    assert gateway.get("/api/v1/catalog", headers=admin).status_code == 200
