"""Multi-host rehearsal: every part on its own network namespace with a real address, so
nothing can lean on 127.0.0.1 — the broker, the Spark master, two Spark workers, and each
service on a host of its own; PostgreSQL (which listens on 127.0.0.1 only) is reached through
a TCP forwarder on the root namespace's bridge address, the "database host". A song goes
from upload (through the gateway) to a recommendation across those hosts.

Files (master dataset, checkpoint, models) sit in one temporary folder every namespace sees,
standing in for the shared storage a real cluster needs (docs/cluster.md).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from netns_hosts import Hosts, netns_available, wait_for_port
from testkit import drop_pg_database, new_pg_database, wait_for

from emergify_cli.broker import broker_binary, free_port
from emergify_cli.spark_cluster import SparkCluster
from emergify_cli.stack import SERVICES, Stack
from emergify_contracts.tables import make_engine, model_versions

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "every_fresh_find.csv"

SERVICE_HOSTS = ("ingest", "stream-processor", "recommender", "spotify-gateway", "api-gateway")
HOST_NAMES = ["broker", "spark-master", "worker-1", "worker-2", *SERVICE_HOSTS]
PORTS = {
    "ingest": 8001,
    "stream-processor": 8002,
    "recommender": 8003,
    "spotify-gateway": 8004,
    "api-gateway": 8080,
}
URL_SETTINGS = {spec.name: spec.url_setting for spec in SERVICES}


@pytest.fixture
def hosts() -> Iterator[Hosts]:
    reason = netns_available()
    assert reason is None, reason  # the rehearsal is part of make test on these machines
    with Hosts(HOST_NAMES) as h:
        yield h
        h.close()
        assert h.leftovers() == []


@pytest.fixture
def database(hosts: Hosts, tmp_path: Path) -> Iterator[str]:
    """A new database, reached at the bridge address through a forwarder (socat) to the
    machine's PostgreSQL on 127.0.0.1:5432."""
    name, _ = new_pg_database("emergify_netns")
    port = free_port()
    hosts.popen(
        None,
        [
            "socat",
            f"TCP-LISTEN:{port},bind={hosts.gateway},fork,reuseaddr",
            "TCP:127.0.0.1:5432",
        ],
        tmp_path / "pg-forwarder.log",
    )
    wait_for_port(hosts.gateway, port)
    try:
        yield f"postgresql+psycopg://postgres@{hosts.gateway}:{port}/{name}"
    finally:
        drop_pg_database(name)


@pytest.mark.slow
@pytest.mark.cluster
@pytest.mark.spark
@pytest.mark.postgres
def test_a_song_goes_from_upload_to_recommendation_across_hosts(
    hosts: Hosts, database: str, tmp_path: Path
) -> None:
    addr = hosts.addr
    bootstrap = f"{addr['broker']}:9092"
    hosts.popen(
        "broker",
        [
            str(broker_binary()),
            "broker",
            "--listener-url",
            f"tcp://{bootstrap}",
            "--advertised-listener-url",
            f"tcp://{bootstrap}",
        ],
        tmp_path / "broker.log",
    )
    wait_for_port(addr["broker"], 9092)

    cluster = SparkCluster(
        tmp_path / "spark",
        host=addr["spark-master"],
        port=7077,
        webui_port=8080,
        workers=2,
        worker_memory="768m",
        worker_hosts=[addr["worker-1"], addr["worker-2"]],
        netns=[hosts.ns["spark-master"], hosts.ns["worker-1"], hosts.ns["worker-2"]],
    )
    admin_key = secrets.token_urlsafe(24)
    env = {
        f"EMERGIFY_{URL_SETTINGS[name].upper()}": f"http://{addr[name]}:{PORTS[name]}"
        for name in SERVICE_HOSTS
    }
    env.update(
        {
            "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "EMERGIFY_DATABASE_URL": database,
            "EMERGIFY_SPARK_MASTER": cluster.master_url,
            "EMERGIFY_SPARK_DRIVER_HOST": addr["stream-processor"],
            "EMERGIFY_SPARK_EXECUTOR_MEMORY": "512m",
            "EMERGIFY_SPARK_EXECUTOR_PYTHON": sys.executable,
            "EMERGIFY_ADMIN_API_KEY": admin_key,
            # The services' shared internal credential (where they require one).
            "EMERGIFY_INTERNAL_TOKEN": secrets.token_urlsafe(32),
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_K_MAX": "6",
            "EMERGIFY_K_MAX_CAP": "6",
            # The dashboard is not started here; CORS still names where it would be.
            "EMERGIFY_DASHBOARD_URL": f"http://{addr['api-gateway']}:8501",
        }
    )
    log: list[str] = []
    stack = Stack(
        env=env,
        workdir=tmp_path / "stack",
        services=tuple(s for s in SERVICES if s.name in SERVICE_HOSTS),
        embedded_broker=False,
        sink=log.append,
        netns={name: hosts.ns[name] for name in SERVICE_HOSTS},
    )
    try:
        cluster.start()
        stack.start()
        run_upload_to_recommendation(stack, cluster, addr, admin_key, database)
    finally:
        stack.stop()
        cluster.stop()
        (tmp_path / "stack.log").write_text("\n".join(log))


def run_upload_to_recommendation(
    stack: Stack, cluster: SparkCluster, addr: dict[str, str], admin_key: str, database: str
) -> None:
    # Nothing listens on loopback: the gateway is only at its own host's address.
    with pytest.raises(httpx.ConnectError):
        httpx.get("http://127.0.0.1:8080/health", timeout=2)
    gateway = f"http://{addr['api-gateway']}:8080"
    with httpx.Client(base_url=gateway, headers={"X-API-Key": admin_key}, timeout=120) as api:
        assert api.get("/health").status_code == 200
        with SAMPLE.open("rb") as f:
            r = api.post("/api/v1/songs/upload", files={"file": ("sample.csv", f, "text/csv")})
        assert r.status_code == 202, r.text
        accepted = r.json()["accepted"]
        assert accepted == 4470

        catalog = wait_for(
            lambda: (
                (c := api.get("/api/v1/catalog").json())["songs"] == accepted
                and c.get("model_version") is not None
                and c
            ),
            timeout=400,
            what="the upload materialised and a first model trained on the cluster",
        )
        # The speed layer's executors ran on the two worker hosts.
        state = cluster.state()
        assert [a["name"] for a in state["activeapps"]] == ["emergify-stream-processor"]
        assert state["activeapps"][0]["cores"] == 2
        workers = {w["host"] for w in state["workers"] if w["state"] == "ALIVE"}
        assert workers == {addr["worker-1"], addr["worker-2"]}

        seed = "70kFiCsoYnJxMgIZ82WQmj"  # "Same Old Haunts", in the uploaded file
        song = api.get(f"/api/v1/songs/{seed}").json()
        assert song["name"] == "Same Old Haunts" and song["cluster"] is not None
        r = api.post("/api/v1/recommendations", json={"seeds": [seed], "limit": 5})
        assert r.status_code == 200, r.text
        items = r.json()["items"]
        assert len(items) == 5 and seed not in {i["track_id"] for i in items}
        assert all(i["cluster"] is not None for i in items)

    engine = make_engine(database)
    with engine.connect() as conn:
        versions = conn.execute(sa.select(model_versions.c.version)).scalars().all()
    engine.dispose()
    assert catalog["model_version"] in versions
