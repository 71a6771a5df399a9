"""/health: 200 only when every service says ok; otherwise 503 and who is not ok."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient


def test_health_ok_when_all_services_are(gateway: TestClient) -> None:
    response = gateway.get("/health")
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["service"] == "api-gateway"
    assert set(report["services"]) == {"ingest", "stream-processor", "recommender",
                                       "spotify-gateway"}  # fmt: skip
    assert all(s["status"] == "ok" for s in report["services"].values())
    assert report["services"]["ingest"]["service"] == "ingest"  # the service's own details


def test_health_503_when_a_service_is_down(
    make_gateway: Callable[..., TestClient], closed_url: str
) -> None:
    gateway = make_gateway(stream_processor_url=closed_url)
    response = gateway.get("/health")
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "degraded"
    assert report["services"]["stream-processor"]["status"] == "unavailable"
    assert report["services"]["recommender"]["status"] == "ok"


def test_health_503_when_a_service_is_starting(
    gateway: TestClient, upstreams: dict[str, Any]
) -> None:
    recommender = upstreams["recommender"].app
    recommender.state.health = ("starting", 503)
    try:
        response = gateway.get("/health")
    finally:
        recommender.state.health = ("ok", 200)
    assert response.status_code == 503
    assert response.json()["services"]["recommender"]["status"] == "starting"
    assert gateway.get("/health").status_code == 200
