"""Edge inputs of the API contract, as plain tests so that a regression names itself.

- A JSON body that is not UTF-8 is the documented 422, not an undocumented 400.
- A request header with whitespace around its value is forwarded trimmed (the upstream
  client refuses to send such a value), not answered 502.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from contract_fuzz.fuzz_kit import recommender_app, stop_lifespans, wait_healthy
from schemathesis.python import asgi as schemathesis_asgi
from servers import ServedApp, serving
from testkit import INTERNAL_HEADERS

from emergify_contracts.tables import create_tables, make_engine
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway

ADMIN_KEY = "findings-admin-key-0123456789abcdef"
NOT_UTF8 = b'{"seeds": ["\xff\xfe"]}'
PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def recommender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApp]:
    """The recommender over an empty catalog, served by uvicorn."""
    url = f"sqlite:///{tmp_path_factory.mktemp('findings') / 'emergify.db'}"
    engine = make_engine(url)
    create_tables(engine)
    engine.dispose()
    with serving() as serve:
        yield serve(recommender_app(url))


def test_a_body_that_is_not_utf8_is_the_documented_422(recommender: ServedApp) -> None:
    response = httpx.post(
        f"{recommender.url}/api/v1/recommendations",
        content=NOT_UTF8,
        headers={"Content-Type": "application/json", **INTERNAL_HEADERS},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "not UTF-8 encoded JSON" in response.json()["detail"]


def test_the_gateway_forwards_a_header_value_with_whitespace_around_it(
    recommender: ServedApp, tmp_path_factory: pytest.TempPathFactory
) -> None:
    closed = "http://127.0.0.1:9"
    gateway = create_gateway(
        GatewaySettings(
            _env_file=None,  # type: ignore[call-arg]
            admin_api_key=ADMIN_KEY,
            api_keys_file=tmp_path_factory.mktemp("keys") / "api-keys.json",
            rate_limit_per_minute=0,
            ingest_url=closed,
            stream_processor_url=closed,
            recommender_url=recommender.url,
            spotify_gateway_url=closed,
        )
    )
    try:
        # The other services' URLs are closed: 503, with the recommender ok.
        wait_healthy(
            gateway,
            ready=lambda response: (
                response.status_code == 503
                and response.json()["services"]["recommender"]["status"] == "ok"
            ),
            headers={"X-API-Key": ADMIN_KEY},  # the per-service detail is for admins only
        )
        # In-process, so the value reaches the gateway untrimmed (a socket server trims it).
        with schemathesis_asgi.get_client(gateway) as client:
            response = client.get(
                "/api/v1/songs",
                params={"q": "a"},
                headers={"X-API-Key": ADMIN_KEY, "Idempotency-Key": "; "},
            )
    finally:
        stop_lifespans()
    assert response.status_code == 200, response.text
