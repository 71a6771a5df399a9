"""The admin app's HTTP contract (without starting Spark: the SIGKILL test runs it whole)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from testkit import INTERNAL_HEADERS

from emergify_stream.config import Settings
from emergify_stream.main import create_app


def test_health_status_retrain_and_problems_before_spark_is_up(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url, kafka_bootstrap_servers="127.0.0.1:1")
    with TestClient(create_app(settings, start_stream=False), headers=INTERNAL_HEADERS) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json() == {
            "status": "starting",
            "service": "stream-processor",
            "query_id": None,
            "error": None,
        }

        status = client.get("/admin/status").json()
        assert status["songs"] == 0 and status["table_version"] == 0
        assert status["model"] is None and status["lag"] is None and status["training"] is False

        retrain = client.post("/admin/retrain")
        assert retrain.status_code == 503
        assert retrain.headers["content-type"] == "application/problem+json"
        assert retrain.json()["title"] == "Service Unavailable"
        assert "still starting" in retrain.json()["detail"]

        missing = client.get("/admin/nope")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"

        ops = {
            path: next(iter(methods.values()))["operationId"]
            for path, methods in client.get("/openapi.json").json()["paths"].items()
        }
        assert ops == {
            "/health": "health-health",
            "/admin/status": "admin-stream_status",
            "/admin/retrain": "admin-retrain",
        }
