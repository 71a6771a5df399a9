"""A real gateway for the dashboard's AppTest tests, served in-process on free ports.

The Spotify sandbox, the spotify-gateway (tokens in SQLite), the ingest service (on the
session's embedded broker), a recommender over a SQLite catalog seeded from the sample CSV,
and the api-gateway in front — each a real app served by uvicorn. The stream processor is not
started: the catalog is written straight into the feature table, and a clustering model
(StandardScaler -> PCA -> KMeans, the batch layer's pipeline, computed with NumPy) is
published through the stream processor's own model registry, so the recommender serves
clusters exactly as it would after a batch run.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES, RowError, detect_layout, row_to_song
from emergify_contracts.tables import create_tables, make_engine, songs
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender
from emergify_spotify.config import Settings as SpotifySettings
from emergify_spotify.main import create_app as create_spotify
from emergify_spotify.sandbox.app import create_app as create_sandbox
from emergify_spotify.sandbox.config import SandboxSettings
from emergify_stream.model_registry import ModelRegistry

SAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"
ADMIN_KEY = "dashboard-test-admin-key-0123456789abcdef"
READ_KEY = "dashboard-test-read-key-0123456789abcdef"
SESSION_SECRET = "dashboard-test-session-secret-0123456789abcdef"
FERNET_KEY = "x1UoVTPeF2t0CSFz0gK3bcLSmzyq1Fa3cRVQzG5-8eg="


class Served:
    """An ASGI app served by uvicorn in a thread on a free port."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        self.port = port or free_port()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def seed_catalog(url: str) -> dict[str, dict[str, Any]]:
    """Write the sample CSV's songs into the feature table at ``url``; return them by id."""
    engine = make_engine(url)
    create_tables(engine)
    now = datetime.now(UTC)
    rows: dict[str, dict[str, Any]] = {}
    with SAMPLE_CSV.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(list(reader.fieldnames or []))
        for raw in reader:
            try:
                song = row_to_song(raw, layout)
            except RowError:
                continue
            row = song.model_dump()
            row.update(
                cluster=None,
                model_version=None,
                upload_id="dashboard-test",
                source="csv:exportify",
                ingested_at=now,
                kafka_partition=-1,
                kafka_offset=None,
                table_version=1,
                updated_at=now,
            )
            rows[song.track_id] = row
    with engine.begin() as conn:
        conn.execute(songs.insert(), list(rows.values()))
    engine.dispose()
    return rows


def fit_model(features: np.ndarray, k: int = 6, pcs: int = 5, seed: int = 7) -> PortableModel:
    """StandardScaler -> PCA -> KMeans (k-means++ seeding, Lloyd iterations), deterministic."""
    means = features.mean(axis=0)
    scales = features.std(axis=0, ddof=1)
    z = (features - means) / scales
    _, singular, vt = np.linalg.svd(z, full_matrices=False)
    components = vt[:pcs].T
    p = z @ components
    rng = np.random.default_rng(seed)
    centroids = [p[rng.integers(len(p))]]
    for _ in range(1, k):
        d = np.min([((p - c) ** 2).sum(axis=1) for c in centroids], axis=0)
        centroids.append(p[rng.choice(len(p), p=d / d.sum())])
    c = np.array(centroids)
    for _ in range(50):
        labels = ((p[:, None, :] - c[None]) ** 2).sum(axis=2).argmin(axis=1)
        c = np.array(
            [p[labels == j].mean(axis=0) if (labels == j).any() else c[j] for j in range(k)]
        )
    sample = rng.choice(len(p), size=min(800, len(p)), replace=False)
    ps, ls = p[sample], labels[sample]
    dist = np.sqrt(((ps[:, None, :] - ps[None]) ** 2).sum(axis=2))
    scores = []
    for i in range(len(ps)):
        own = ls == ls[i]
        a = dist[i, own].sum() / max(own.sum() - 1, 1)
        b = min(dist[i, ls == j].mean() for j in set(ls.tolist()) if j != ls[i])
        scores.append((b - a) / max(a, b))
    variance = singular**2 / (singular**2).sum()
    return PortableModel(
        version=1,
        trained_at=datetime.now(UTC),
        means=means.tolist(),
        scales=scales.tolist(),
        components=components.tolist(),
        centroids=c.tolist(),
        k=k,
        silhouette=float(np.mean(scores)),
        songs=len(features),
        explained_variance=variance[:pcs].tolist(),
    )


@dataclass
class DashboardStack:
    """The running services, and what tests need to know about them."""

    gateway: Served
    sandbox: Served
    catalog: dict[str, dict[str, Any]]
    admin_key: str = ADMIN_KEY
    read_key: str = READ_KEY

    def sign_in(self, user: str = "demo") -> str:
        """Sign ``user`` in through the gateway like a browser; return the session cookie."""
        with httpx.Client(base_url=self.gateway.url, follow_redirects=False, timeout=30) as b:
            login = b.get("/api/v1/spotify/login")
            assert login.status_code == 302, login.text
            # login_hint (sandbox only) picks the demo listener, as the consent page would.
            authorize = b.get(f"{login.headers['location']}&login_hint={user}")
            assert authorize.status_code == 303, authorize.text
            callback = b.get(authorize.headers["location"])
            assert callback.status_code == 302, callback.text
            cookie = b.cookies.get("emergify_session")
        assert cookie, "the callback set no session cookie"
        return cookie

    def sandbox_playlists(self, user: str = "demo") -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.sandbox.url, timeout=10) as api:
            return api.get(f"/_sandbox/users/{user}/playlists").json()["items"]


@pytest.fixture(scope="module")
def dashboard_stack(
    tmp_path_factory: pytest.TempPathFactory, broker: EmbeddedBroker
) -> Iterator[DashboardStack]:
    """Sandbox, ingest, recommender, spotify-gateway and api-gateway for one test module."""
    workdir = tmp_path_factory.mktemp("dashboard")
    gateway_port, sandbox_port = free_port(), free_port()
    callback = f"http://127.0.0.1:{gateway_port}/api/v1/spotify/callback"
    sandbox_settings = SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_url=f"http://127.0.0.1:{sandbox_port}",
        spotify_sandbox_redirect_uris=[callback],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )
    catalog_url = f"sqlite:///{workdir / 'catalog.db'}"
    catalog = seed_catalog(catalog_url)
    features = np.array([[row[f] for f in AUDIO_FEATURES] for row in catalog.values()], float)
    registry = ModelRegistry(make_engine(catalog_url))
    registry.publish(
        fit_model(features), metrics={"source": "dashboard tests"}, spark_model_path=None
    )
    registry.engine.dispose()

    topics = f"dashboard-{free_port()}"
    songs_topic = f"{topics}.songs"
    create_topics(broker.bootstrap, [songs_topic], 1)
    served: list[Served] = []
    try:
        sandbox = Served(create_sandbox(sandbox_settings), sandbox_port).start()
        served.append(sandbox)
        recommender = Served(
            create_recommender(
                RecommenderSettings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=catalog_url,
                    kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # no change feed needed
                    stream_processor_url=f"http://127.0.0.1:{free_port()}",
                    refresh_interval_seconds=3600.0,
                )
            )
        ).start()
        served.append(recommender)
        ingest = Served(
            create_ingest(
                IngestSettings(
                    _env_file=None,  # type: ignore[call-arg]
                    kafka_bootstrap_servers=broker.bootstrap,
                    songs_topic=songs_topic,
                    lake_uri=str(workdir / "lake"),
                )
            )
        ).start()
        served.append(ingest)
        spotify = Served(
            create_spotify(
                SpotifySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    database_url=f"sqlite:///{workdir / 'spotify.db'}",
                    spotify_client_id=sandbox_settings.spotify_sandbox_client_id,
                    spotify_client_secret=sandbox_settings.spotify_sandbox_client_secret,
                    spotify_redirect_uri=callback,
                    spotify_accounts_url=sandbox.url,
                    spotify_api_url=f"{sandbox.url}/v1",
                    session_secret=SESSION_SECRET,
                    token_encryption_key=FERNET_KEY,
                    dashboard_url="http://127.0.0.1:8501/",
                    recommender_url=recommender.url,
                )
            )
        ).start()
        served.append(spotify)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("EMERGIFY_SESSION_SECRET", SESSION_SECRET)
            gateway_app = create_gateway(
                GatewaySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    ingest_url=ingest.url,
                    stream_processor_url=f"http://127.0.0.1:{free_port()}",
                    recommender_url=recommender.url,
                    spotify_gateway_url=spotify.url,
                    admin_api_key=ADMIN_KEY,
                    read_api_keys=READ_KEY,
                    session_secret=SESSION_SECRET,
                    rate_limit_per_minute=0,
                )
            )
        gateway = Served(gateway_app, gateway_port).start()
        served.append(gateway)
        yield DashboardStack(gateway=gateway, sandbox=sandbox, catalog=catalog)
    finally:
        for server in reversed(served):
            server.stop()
