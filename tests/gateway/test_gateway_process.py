"""``python -m emergify_gateway`` as a process, and the last-resort 500 problem."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient
from testkit import wait_for

from emergify_cli.broker import free_port
from emergify_gateway.main import create_app


def _env(tmp_path: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMERGIFY_")}
    env.update({f"EMERGIFY_{k.upper()}": v for k, v in values.items()})
    return env


def test_refuses_to_start_without_admin_key(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "emergify_gateway"],
        cwd=tmp_path,  # no .env here
        env=_env(tmp_path, gateway_url=f"http://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "EMERGIFY_ADMIN_API_KEY" in result.stderr


def test_serves_on_its_url_setting(tmp_path: Path, upstreams: dict[str, Any]) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "emergify_gateway"],
        cwd=tmp_path,
        env=_env(
            tmp_path,
            gateway_url=f"http://127.0.0.1:{port}",
            admin_api_key="process-test-key",
            ingest_url=upstreams["ingest"].url,
            stream_processor_url=upstreams["stream-processor"].url,
            recommender_url=upstreams["recommender"].url,
            spotify_gateway_url=upstreams["spotify-gateway"].url,
            log_format="json",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:

        def answered() -> httpx.Response | None:
            assert proc.poll() is None, "the gateway exited"
            with contextlib.suppress(httpx.TransportError):
                return httpx.get(f"http://127.0.0.1:{port}/health", timeout=5)
            return None

        health = wait_for(answered, 30, "the gateway to answer")
        assert health.status_code == 200, health.text
        model = httpx.get(
            f"http://127.0.0.1:{port}/api/v1/model", headers={"X-API-Key": "process-test-key"}
        )
        assert model.status_code == 200
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    assert '"event": "request"' in output  # one JSON access line per request
    assert "process-test-key" not in output


def test_unexpected_error_is_a_500_problem_with_the_request_id(
    make_settings: Callable[..., Any],
) -> None:
    async def broken() -> None:
        raise RuntimeError("bug")

    app = create_app(make_settings())
    app.add_api_route("/broken", broken)  # a bug, inside the gateway's real middleware stack
    with TestClient(app) as client:
        response = client.get("/broken", headers={"X-Request-ID": "r-500"})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"] == "r-500"
    problem = response.json()
    assert problem["request_id"] == "r-500" and problem["instance"] == "/broken"
    assert "bug" not in problem["detail"]  # internals stay in the log
