"""Recommender replicas behind the gateway, all real processes: three recommenders over one
catalog and the gateway (``python -m emergify_gateway``) balancing across them.

The replicas follow the same model events (the fallback poll is switched off, so only the
change feed can move them); the gateway spreads requests over all three; a replica frozen with
requests in flight and then SIGKILLed costs no request (those in flight are retried once on
another replica), the two left take all traffic and /health shows the dead one down; with
every replica down the answer is 503 with Retry-After.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from catalog_fixtures import (
    feature_matrix,
    fit_portable_model,
    insert_model,
    read_sample_songs,
    seed_catalog,
)
from kafka_io import publish
from testkit import INTERNAL_HEADERS, ServiceProcess, wait_for

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_contracts.events import ModelPublished
from emergify_contracts.tables import make_engine

ADMIN_KEY = "replicas-admin-key-0123456789abcdef"
SEED = "70kFiCsoYnJxMgIZ82WQmj"  # a song of the sample catalog
THREADS = 4
REQUESTS_PER_THREAD = 150


@dataclass
class Replica:
    name: str
    url: str
    proc: ServiceProcess

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", headers=INTERNAL_HEADERS, timeout=5).json()


@dataclass
class Cluster:
    replicas: list[Replica]
    gateway: ServiceProcess
    gateway_url: str
    database_url: str
    bootstrap: str
    models_topic: str

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.gateway_url, headers={"X-API-Key": ADMIN_KEY}, timeout=60)


@pytest.fixture(scope="module")
def cluster(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("replicas")
    database_url = f"sqlite:///{tmp / 'emergify.db'}"
    seed_catalog(database_url)
    suffix = tmp.name[-10:]
    topics = {"catalog": f"catalog.{suffix}", "models": f"models.{suffix}"}
    create_topics(broker.bootstrap, list(topics.values()))
    closed = f"http://127.0.0.1:{free_port()}"
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("EMERGIFY_")}
    base_env.update(
        {
            "EMERGIFY_INTERNAL_TOKEN": os.environ["EMERGIFY_INTERNAL_TOKEN"],
            "EMERGIFY_DATABASE_URL": database_url,
            "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap,
            "EMERGIFY_CATALOG_CHANGES_TOPIC": topics["catalog"],
            "EMERGIFY_MODELS_TOPIC": topics["models"],
            "EMERGIFY_STREAM_PROCESSOR_URL": closed,
            "EMERGIFY_INGEST_URL": closed,
            "EMERGIFY_SPOTIFY_GATEWAY_URL": closed,
        }
    )
    replicas = []
    for n in range(1, 4):
        url = f"http://127.0.0.1:{free_port()}"
        env = {
            **base_env,
            "EMERGIFY_RECOMMENDER_URL": url,
            "EMERGIFY_REPLICA_NAME": f"replica-{n}",
            # Only the change feed may bring a new model: the test proves it does, for each.
            "EMERGIFY_REFRESH_INTERVAL_SECONDS": "3600",
            "EMERGIFY_LOG_LEVEL": "WARNING",
        }
        proc = ServiceProcess("emergify_recommender", env, tmp / f"replica-{n}.log").start()
        replicas.append(Replica(f"replica-{n}", url, proc))
    gateway_url = f"http://127.0.0.1:{free_port()}"
    gateway_env = {
        **base_env,
        "EMERGIFY_GATEWAY_URL": gateway_url,
        "EMERGIFY_ADMIN_API_KEY": ADMIN_KEY,
        "EMERGIFY_RECOMMENDER_URLS": ",".join(r.url for r in replicas),
        "EMERGIFY_API_KEYS_FILE": str(tmp / "api-keys.json"),
        "EMERGIFY_REVOKED_SESSIONS_FILE": str(tmp / "revoked-sessions.json"),
        "EMERGIFY_RATE_LIMIT_PER_MINUTE": "0",
        "EMERGIFY_REPLICA_CHECK_INTERVAL_SECONDS": "0.5",
        # Long enough that a frozen replica is not taken out by its health check before
        # requests reach it (the kill test wants requests in flight there).
        "EMERGIFY_PROBE_TIMEOUT_SECONDS": "20",
        "EMERGIFY_HEALTH_CACHE_SECONDS": "0",
        "EMERGIFY_OPENAPI_CACHE_SECONDS": "0",
        "EMERGIFY_LOG_FORMAT": "json",
        "EMERGIFY_LOG_LEVEL": "INFO",
    }
    gateway = ServiceProcess("emergify_gateway", gateway_env, tmp / "gateway.log")
    try:
        for replica in replicas:
            replica.proc.wait_healthy(replica.url, timeout=120)
        gateway.start()
        wait_for(
            lambda: _gateway_up(gateway, gateway_url), 60, "the gateway to serve", interval=0.3
        )
        yield Cluster(
            replicas, gateway, gateway_url, database_url, broker.bootstrap, topics["models"]
        )
    finally:
        gateway.terminate()
        for replica in replicas:
            replica.proc.terminate()


def _gateway_up(gateway: ServiceProcess, url: str) -> bool:
    assert gateway.alive(), f"the gateway exited:\n{gateway.log_tail()}"
    try:
        # 503 too: ingest and the other services are not running in this test.
        return httpx.get(f"{url}/health", timeout=5).status_code in (200, 503)
    except httpx.HTTPError:
        return False


def recommend(client: httpx.Client) -> httpx.Response:
    return client.post("/api/v1/recommendations", json={"seeds": [SEED], "limit": 5})


def buffered_connections(port: int) -> int:
    """Established TCP connections to local ``port`` with unread bytes (requests the process
    listening there has not read), from /proc/net/tcp."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        rx_queue = int(fields[4].split(":")[1], 16)
        if local_port == port and fields[3] == "01" and rx_queue > 0:
            count += 1
    return count


def gateway_log_events(cluster: Cluster, event: str) -> list[dict]:
    lines = cluster.gateway.log_path.read_text(errors="replace").splitlines()
    records = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event:
            records.append(record)
    return records


def test_replicas_follow_the_same_model_event_and_share_the_load(cluster: Cluster) -> None:
    wait_for(
        lambda: all(r.health()["change_feed"] == "connected" for r in cluster.replicas),
        60,
        "every replica's change feed to connect",
    )
    assert {r.health()["model_version"] for r in cluster.replicas} == {None}
    model = fit_portable_model(feature_matrix(read_sample_songs()), k=6, version=1)
    engine = make_engine(cluster.database_url)
    insert_model(engine, model)
    engine.dispose()
    publish(
        cluster.bootstrap,
        cluster.models_topic,
        "1",
        ModelPublished(
            version=1,
            k=model.k,
            silhouette=model.silhouette,
            songs=model.songs,
            trained_at=model.trained_at,
        ),
    )
    # One event, and every replica (no consumer group splits it) moves to model 1.
    wait_for(
        lambda: all(r.health()["model_version"] == 1 for r in cluster.replicas),
        60,
        "every replica to load model 1 from the event",
    )

    with cluster.client() as client:
        answers = [recommend(client) for _ in range(30)]
        assert all(a.status_code == 200 for a in answers), [a.text[:300] for a in answers]
        bodies = [a.json() for a in answers]
        # Each answer says who answered and from which model and table.
        assert Counter(b["replica"] for b in bodies).keys() == {"replica-1", "replica-2",
                                                                 "replica-3"}  # fmt: skip
        assert {b["model_version"] for b in bodies} == {1}
        assert len({b["table_version"] for b in bodies}) == 1
        assert len({tuple(i["track_id"] for i in b["items"]) for b in bodies}) == 1

        doc = client.get("/openapi.json").json()
        assert "/api/v1/recommendations" in doc["paths"]
        assert "recommender" not in doc["info"]["x-unavailable"]
        health = client.get("/health")
        recommender = health.json()["services"]["recommender"]
        assert recommender["status"] == "ok"
        assert all(state["up"] for state in recommender["replicas"].values())


def test_a_replica_killed_under_load_costs_no_request(cluster: Cluster) -> None:
    victim, survivors = cluster.replicas[0], cluster.replicas[1:]
    assert victim.proc.alive()
    done: list[tuple[int, str | None, str]] = []  # (status, replica, text)
    lock = threading.Lock()
    kill_after = THREADS * REQUESTS_PER_THREAD // 4

    def load() -> None:
        with cluster.client() as client:
            for _ in range(REQUESTS_PER_THREAD):
                response = recommend(client)
                replica = response.json().get("replica") if response.status_code == 200 else None
                with lock:
                    done.append((response.status_code, replica, response.text[:300]))

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(load) for _ in range(THREADS)]
        wait_for(lambda: len(done) >= kill_after, 120, "a quarter of the load to be answered")
        # Frozen, the victim holds the requests it was sent: they are in flight when it dies.
        victim.proc.signal(signal.SIGSTOP)
        wait_for(
            lambda: buffered_connections(victim.port) >= 2,
            60,
            "requests to reach the frozen replica (beyond the one health probe)",
            interval=0.01,
        )
        killed_at = len(done)
        victim.proc.kill()
        for future in futures:
            future.result(timeout=300)

    failures = [(status, text) for status, _, text in done if status != 200]
    assert not failures, failures[:5]
    assert len(done) == THREADS * REQUESTS_PER_THREAD
    # The requests in flight on the victim were sent once more, to another replica.
    retried = gateway_log_events(cluster, "retrying on another replica")
    assert retried and all(r["failed"] == victim.url for r in retried)
    after = Counter(replica for _, replica, _ in done[killed_at:])
    assert set(after) == {r.name for r in survivors}

    with cluster.client() as client:
        later = Counter(recommend(client).json()["replica"] for _ in range(20))
        assert set(later) == {r.name for r in survivors}
        health = client.get("/health")
        recommender = health.json()["services"]["recommender"]
        assert recommender["status"] == "degraded"
        states = recommender["replicas"]
        assert states[victim.url]["up"] is False
        assert states[victim.url]["status"] == "unavailable"
        assert all(states[r.url]["up"] for r in survivors)
        # The merged document still comes from a live replica.
        doc = client.get("/openapi.json").json()
        assert "/api/v1/recommendations" in doc["paths"]
        assert "recommender" not in doc["info"]["x-unavailable"]


def test_every_replica_down_is_503_with_retry_after(cluster: Cluster) -> None:
    for replica in cluster.replicas:
        replica.proc.kill()
    with cluster.client() as client:
        for call in (
            lambda: recommend(client),
            lambda: client.get("/api/v1/songs", params={"q": "haunts"}),
        ):
            for _ in range(3):  # pooled connections, then refused, then marked down
                response = call()
                assert response.status_code == 503, response.text
                assert response.headers["content-type"].startswith("application/problem+json")
                assert int(response.headers["retry-after"]) > 0
                assert response.json()["service"] == "recommender"
        wait_for(
            lambda: (
                client.get("/health").json()["services"]["recommender"]["status"] == "unavailable"
            ),
            30,
            "the health report to show every replica down",
        )
        states = client.get("/health").json()["services"]["recommender"]["replicas"]
        assert not any(state["up"] for state in states.values())
