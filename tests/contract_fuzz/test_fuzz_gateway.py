"""Schemathesis against the api-gateway's merged /openapi.json, with real services behind it.

Ingest (on the session's embedded broker), the recommender over the sample catalog and a
trained model, the stream processor's admin app (without Spark: retraining answers its
documented 503), and the spotify-gateway in front of the Spotify sandbox are served by uvicorn
on free ports; the gateway runs in-process and every request carries the admin key, so each
operation of the merged document reaches its service. Rate limits are off (the fuzz is a
burst); the key file lives in a temporary folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from contract_fuzz.fuzz_kit import (
    SESSION_SECRET,
    fuzz_operations,
    recommender_app,
    sandbox_settings,
    seed_trained_catalog,
    spotify_app,
    stop_lifespans,
    wait_healthy,
)
from servers import serving

from emergify_cli.broker import EmbeddedBroker, free_port
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_stream.config import Settings as StreamSettings
from emergify_stream.main import create_app as create_stream

ADMIN_KEY = "fuzz-admin-key-0123456789abcdef0123"


def services_up(response: Any) -> bool:
    """Every service behind the gateway is ok, but the stream processor (no Spark: starting)."""
    services = response.json().get("services", {})
    return services.get("stream-processor", {}).get("status") == "starting" and all(
        report.get("status") == "ok"
        for name, report in services.items()
        if name != "stream-processor"
    )


@pytest.fixture(scope="module")
def gateway_schema(
    broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    folder = tmp_path_factory.mktemp("fuzz-gateway")
    catalog_url = f"sqlite:///{folder / 'emergify.db'}"
    seed_trained_catalog(catalog_url)
    tag = uuid.uuid4().hex[:8]
    ingest = create_ingest(
        IngestSettings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_bootstrap_servers=broker.bootstrap,
            lake_uri=str(folder / "lake"),
            songs_topic=f"fuzz.gw.songs.{tag}",
            songs_dlq_topic=f"fuzz.gw.dlq.{tag}",
            catalog_changes_topic=f"fuzz.gw.changes.{tag}",
            models_topic=f"fuzz.gw.models.{tag}",
            kafka_request_timeout_ms=5_000,
            kafka_connect_backoff_s=0.2,
        )
    )
    # Without Spark the admin app answers as while starting: retrain is a documented 503.
    stream = create_stream(
        StreamSettings(database_url=catalog_url, kafka_bootstrap_servers="127.0.0.1:1"),
        start_stream=False,
    )
    sandbox_port = free_port()
    sandbox = sandbox_settings(
        f"http://127.0.0.1:{sandbox_port}",
        f"http://127.0.0.1:{free_port()}/api/v1/spotify/callback",
    )
    with serving() as serve:
        serve(create_sandbox(sandbox), sandbox_port)
        recommender = serve(recommender_app(catalog_url))
        served = {
            "ingest_url": serve(ingest).url,
            "stream_processor_url": serve(stream).url,
            "recommender_url": recommender.url,
            "spotify_gateway_url": serve(spotify_app(folder, sandbox, recommender.url)).url,
        }
        gateway = create_gateway(
            GatewaySettings(
                _env_file=None,  # type: ignore[call-arg]
                admin_api_key=ADMIN_KEY,
                session_secret=SESSION_SECRET,
                api_keys_file=folder / "api-keys.json",
                rate_limit_per_minute=0,
                openapi_cache_seconds=3600,
                **served,
            )
        )
        # Each service's state is shown to an admin key only.
        wait_healthy(gateway, ready=services_up, headers={"X-API-Key": ADMIN_KEY})
        yield schemathesis.openapi.from_asgi("/openapi.json", gateway)
        stop_lifespans()


def test_gateway_api(gateway_schema: schemathesis.BaseSchema) -> None:
    raw = gateway_schema.raw_schema
    assert raw["info"]["x-unavailable"] == [], "a service's document was not merged"
    # The repository's schemathesis.toml is in force: a 413 (body over the route's limit)
    # is a rejection of invalid data.
    rejecting = gateway_schema.config.checks_config_for().negative_data_rejection
    assert "413" in rejecting.expected_statuses
    fuzzed = fuzz_operations(gateway_schema, headers={"X-API-Key": ADMIN_KEY})
    # Every service's operations were fuzzed through the gateway and reached the service (the
    # gateway checks no body: a 422 of an upload is ingest's).
    for label, status in {
        "POST /api/v1/songs": 422,
        "POST /api/v1/songs/upload": 422,
        "GET /api/v1/songs": 200,
        "POST /api/v1/recommendations": 200,
        "GET /api/v1/clusters": 200,
        "POST /api/v1/model/retrain": 503,
        "GET /api/v1/spotify/me": 401,  # no session: the spotify-gateway's answer
        "POST /api/v1/admin/keys": 201,
    }.items():
        assert fuzzed[label][status], (label, fuzzed.get(label))
