"""The issue's fault: the recommender down or restarting. The real gateway in front of the real
recommender process answers 503 with ``Retry-After`` within its connect timeout whether the
port is closed, the process is killed mid-request or it is restarting, and serves again as
soon as the recommender is back. Never a hang, never a generic 500."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from catalog_fixtures import seed_catalog
from servers import serving
from testkit import ServiceProcess, wait_for

from emergify_cli.broker import EmbeddedBroker, free_port
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway

ADMIN_KEY = "faults-admin-key-0123456789abcdef"
CONNECT_TIMEOUT = 1.0
UPSTREAM_TIMEOUT = 30.0
# No test here times an answer (these machines are noisy). A gateway that waited on a dead
# service would answer 504 once its read timeout ran out, or not before the client gives up
# (CLIENT_TIMEOUT, below the read timeout): both fail the 503 checks. So a 503 proves the
# gateway gave up at connect time or when the connection broke, without a clock assertion.
CLIENT_TIMEOUT = UPSTREAM_TIMEOUT - 10
SEED = "70kFiCsoYnJxMgIZ82WQmj"  # a song of the sample catalog


@pytest.fixture
def recommender(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[tuple[ServiceProcess, str]]:
    """The real recommender process on the sample catalog (SQLite), on a fixed free port so
    it can be restarted at the same address."""
    database_url = f"sqlite:///{tmp_path / 'emergify.db'}"
    seed_catalog(database_url)
    url = f"http://127.0.0.1:{free_port()}"
    suffix = tmp_path.name[-10:]
    env = {
        **os.environ,
        "EMERGIFY_DATABASE_URL": database_url,
        "EMERGIFY_RECOMMENDER_URL": url,
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
        "EMERGIFY_CATALOG_CHANGES_TOPIC": f"catalog.{suffix}",
        "EMERGIFY_MODELS_TOPIC": f"models.{suffix}",
        "EMERGIFY_STREAM_PROCESSOR_URL": f"http://127.0.0.1:{free_port()}",  # not running
        "EMERGIFY_LOG_LEVEL": "WARNING",
    }
    proc = ServiceProcess("emergify_recommender", env, tmp_path / "recommender.log").start()
    proc.wait_healthy(url, timeout=60)
    yield proc, url
    proc.terminate()


@pytest.fixture
def gateway(recommender: tuple[ServiceProcess, str]) -> Iterator[httpx.Client]:
    """The real gateway (uvicorn, real HTTP) with the recommender behind it."""
    closed = f"http://127.0.0.1:{free_port()}"
    settings = GatewaySettings(
        _env_file=None,  # type: ignore[call-arg]
        admin_api_key=ADMIN_KEY,
        recommender_url=recommender[1],
        ingest_url=closed,
        stream_processor_url=closed,
        spotify_gateway_url=closed,
        connect_timeout_seconds=CONNECT_TIMEOUT,
        upstream_timeout_seconds=UPSTREAM_TIMEOUT,
        rate_limit_per_minute=0,
    )
    with (
        serving() as serve,
        httpx.Client(
            base_url=serve(create_gateway(settings)).url,
            headers={"X-API-Key": ADMIN_KEY},
            timeout=CLIENT_TIMEOUT,
        ) as client,
    ):
        yield client


def timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - started


def search(client: httpx.Client) -> httpx.Response:
    return client.get("/api/v1/songs", params={"q": "haunts"})


def recommend(client: httpx.Client) -> httpx.Response:
    return client.post("/api/v1/recommendations", json={"seeds": [SEED], "limit": 5})


def buffered_connections(port: int) -> int:
    """Established TCP connections to local ``port`` with unread bytes in their receive queue
    (from /proc/net/tcp: requests the process listening there has not read)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        rx_queue = int(fields[4].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and rx_queue > 0:  # 01: ESTABLISHED
            count += 1
    return count


def assert_unavailable(response: httpx.Response) -> None:
    """A 503 problem from the gateway or the recommender, saying when to come back."""
    assert response.status_code == 503, response.text[:500]
    assert response.headers["content-type"].startswith("application/problem+json")
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["status"] == 503


def test_killed_mid_request_then_port_closed_is_503_quickly(
    recommender: tuple[ServiceProcess, str], gateway: httpx.Client
) -> None:
    proc, url = recommender
    port = int(url.rsplit(":", 1)[1])
    assert search(gateway).status_code == 200
    assert recommend(gateway).status_code == 200

    # Frozen: the kernel still accepts and buffers the requests, nobody answers them.
    proc.signal(signal.SIGSTOP)
    with ThreadPoolExecutor(4) as pool:
        pending = [pool.submit(search, gateway), pool.submit(recommend, gateway)]
        pending += [pool.submit(search, gateway), pool.submit(recommend, gateway)]
        # Every request reached the frozen process (buffered in its sockets) and none is
        # answered: a condition on the kernel's queues, not a pause.
        wait_for(
            lambda: buffered_connections(port) >= len(pending),
            what="the requests to reach the frozen recommender",
        )
        assert not any(f.done() for f in pending), "the frozen recommender answered"
        proc.kill()
        for future in pending:
            assert_unavailable(future.result(timeout=UPSTREAM_TIMEOUT))
    problem = recommend(gateway).json()
    assert problem["service"] == "recommender"

    # Port closed: refused at connect time, GETs and POSTs alike.
    for call in (search, recommend):
        response = call(gateway)
        assert_unavailable(response)
        assert response.json()["service"] == "recommender"
    # The gateway itself stays up and says which service is gone.
    health = gateway.get("/health")
    assert health.status_code == 503, health.text
    assert health.json()["services"]["recommender"]["status"] == "unavailable"


def test_restarting_recommender_is_503_until_back_then_200(
    recommender: tuple[ServiceProcess, str], gateway: httpx.Client
) -> None:
    proc, url = recommender
    assert search(gateway).status_code == 200
    answers: list[tuple[float, int, float]] = []  # (when, status, seconds)
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            sent = time.monotonic()
            response, seconds = timed(lambda: search(gateway))
            if response.status_code != 200:
                assert_unavailable(response)
            answers.append((sent, response.status_code, seconds))
            time.sleep(0.05)

    errors: list[BaseException] = []

    def guarded() -> None:
        try:
            poll()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    poller = threading.Thread(target=guarded)
    poller.start()
    try:
        wait_for(lambda: any(s == 200 for _, s, _ in answers), what="a 200 before the kill")
        proc.kill()
        killed_at = time.monotonic()
        # Down for a while: a few requests answered while nothing listens.
        wait_for(
            lambda: sum(t > killed_at + 0.1 and s == 503 for t, s, _ in answers) >= 5,
            what="503s while the recommender is down",
        )
        restarted_at = time.monotonic()
        proc.start()
        proc.wait_healthy(url, timeout=60)
        back_at = time.monotonic()
        wait_for(
            lambda: any(t > back_at and s == 200 for t, s, _ in answers),
            timeout=30,
            what="a 200 through the gateway after the restart",
            interval=0.1,
        )
    finally:
        stop.set()
        poller.join(60)
    assert not errors, errors[0]

    statuses = {s for _, s, _ in answers}
    assert statuses <= {200, 503}
    down = [a for a in answers if killed_at + 0.1 < a[0] < restarted_at]
    assert down and all(s == 503 for _, s, _ in down)  # nothing served by a dead process
    assert answers[-1][1] == 200
