"""/health: 200 only when every service says ok, else 503; who is not ok only for admins.

Anonymous callers learn up or down and nothing else (no paths, database or broker errors), and
many of them at once cost one round of upstream probes per cache period, not one each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient


def test_health_ok_when_all_services_are(gateway: TestClient, admin: dict[str, str]) -> None:
    response = gateway.get("/health", headers=admin)
    assert response.status_code == 200
    report = response.json()
    assert report["status"] == "ok"
    assert report["service"] == "api-gateway"
    assert set(report["services"]) == {"ingest", "stream-processor", "recommender",
                                       "spotify-gateway"}  # fmt: skip
    assert all(s["status"] == "ok" for s in report["services"].values())
    assert report["services"]["ingest"]["service"] == "ingest"  # the service's own details


def test_health_503_when_a_service_is_down(
    make_gateway: Callable[..., TestClient], closed_url: str, admin: dict[str, str]
) -> None:
    gateway = make_gateway(stream_processor_url=closed_url)
    response = gateway.get("/health", headers=admin)
    assert response.status_code == 503
    report = response.json()
    assert report["status"] == "degraded"
    assert report["services"]["stream-processor"]["status"] == "unavailable"
    assert report["services"]["recommender"]["status"] == "ok"


def test_health_503_when_a_service_is_starting(
    make_gateway: Callable[..., TestClient], upstreams: dict[str, Any], admin: dict[str, str]
) -> None:
    gateway = make_gateway(health_cache_seconds=0)
    recommender = upstreams["recommender"].app
    recommender.state.health = ("starting", 503)
    try:
        response = gateway.get("/health", headers=admin)
    finally:
        recommender.state.health = ("ok", 200)
    assert response.status_code == 503
    assert response.json()["services"]["recommender"]["status"] == "starting"
    assert gateway.get("/health").status_code == 200


def test_anonymous_health_is_up_or_down_only(
    make_gateway: Callable[..., TestClient],
    upstreams: dict[str, Any],
    admin: dict[str, str],
    reader: dict[str, str],
) -> None:
    gateway = make_gateway(health_cache_seconds=0)
    recommender = upstreams["recommender"].app
    recommender.state.health = ("degraded", 503)
    try:
        for headers in ({}, reader, {"X-API-Key": "not-a-key"}):
            response = gateway.get("/health", headers=headers)
            assert response.status_code == 503
            assert response.json() == {"status": "degraded", "service": "api-gateway"}
        detailed = gateway.get("/health", headers=admin).json()
        assert detailed["services"]["recommender"]["status"] == "degraded"
    finally:
        recommender.state.health = ("ok", 200)
    assert gateway.get("/health").json() == {"status": "ok", "service": "api-gateway"}


def test_many_health_calls_share_one_round_of_probes(
    make_gateway: Callable[..., TestClient], upstreams: dict[str, Any]
) -> None:
    gateway = make_gateway(health_cache_seconds=600)
    probes = lambda: sum(  # noqa: E731
        1 for r in upstreams["ingest"].seen if r["path"] == "/health"
    )
    before = probes()
    for _ in range(50):
        assert gateway.get("/health").status_code == 200
    assert probes() - before == 1
