"""A real gateway for the dashboard's AppTest tests, served in-process on free ports.

The Spotify sandbox, the spotify-gateway (tokens in SQLite), the ingest service (songs and
feedback topics on the session's embedded broker), a recommender over a SQLite catalog seeded
from the sample CSV, and the api-gateway in front — each a real app served by uvicorn. The
stream processor is not started: the catalog is written straight into the feature table,
and a clustering model (StandardScaler -> PCA -> KMeans, the batch layer's pipeline, computed
with NumPy) is published through the stream processor's own model registry, so the
recommender serves clusters exactly as it would after a batch run.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from catalog_fixtures import fit_portable_model, seed_catalog
from servers import ServedApp
from spotify_stack import run_spotify_stack, sign_in

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import make_engine
from emergify_ingest.config import Settings as IngestSettings
from emergify_stream.model_registry import ModelRegistry

ADMIN_KEY = "dashboard-test-admin-key-0123456789abcdef"
READ_KEY = "dashboard-test-read-key-0123456789abcdef"
#: The dashboard's own key (recs:read, known to the gateway as the dashboard's).
DASHBOARD_KEY = "dashboard-test-own-key-0123456789abcdef"
SESSION_SECRET = "dashboard-test-session-secret-0123456789abcdef"


@dataclass
class DashboardStack:
    """The running services, and what tests need to know about them."""

    gateway: ServedApp
    sandbox: ServedApp
    catalog: dict[str, dict[str, Any]]
    admin_key: str = ADMIN_KEY
    read_key: str = READ_KEY
    dashboard_key: str = DASHBOARD_KEY
    bootstrap: str = ""
    feedback_topic: str = ""

    def sign_in(self, user: str = "demo") -> str:
        """Sign ``user`` in through the gateway like a browser; return the session cookie."""
        with httpx.Client(base_url=self.gateway.url, follow_redirects=False, timeout=30) as b:
            sign_in(b, user)
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
    catalog_url = f"sqlite:///{workdir / 'catalog.db'}"
    catalog = seed_catalog(catalog_url, upload_id="dashboard-test")
    features = np.array([[row[f] for f in AUDIO_FEATURES] for row in catalog.values()], float)
    registry = ModelRegistry(make_engine(catalog_url))
    registry.publish(
        fit_portable_model(features, k=6, version=1, iterations=50, silhouette_sample=800),
        metrics={"source": "dashboard tests"},
        spark_model_path=None,
    )
    registry.engine.dispose()

    songs_topic = f"dashboard-{free_port()}.songs"
    feedback_topic = f"dashboard-{free_port()}.feedback"
    create_topics(broker.bootstrap, [songs_topic, feedback_topic], 1)
    with run_spotify_stack(
        catalog_url=catalog_url,
        spotify_db_url=f"sqlite:///{workdir / 'spotify.db'}",
        admin_key=ADMIN_KEY,
        session_secret=SESSION_SECRET,
        ingest_settings=IngestSettings(
            _env_file=None,  # type: ignore[call-arg]
            kafka_bootstrap_servers=broker.bootstrap,
            songs_topic=songs_topic,
            feedback_topic=feedback_topic,
            lake_uri=str(workdir / "lake"),
        ),
        spotify_overrides={
            # Living playlists: the sync worker listens for changes on the broker; its sweep
            # is an hour apart (creating and refreshing sync at once anyway).
            "kafka_bootstrap_servers": broker.bootstrap,
            "living_sync_interval_seconds": 3600,
            "living_sync_group": f"dashboard-living-{free_port()}",
        },
        gateway_overrides={
            "read_api_keys": READ_KEY,
            "dashboard_api_key": DASHBOARD_KEY,
            # The gateway allows dashboard uploads for signed-in listeners; each test turns the
            # dashboard's own setting on or leaves it off (the default).
            "dashboard_uploads": True,
        },
    ) as stack:
        yield DashboardStack(
            gateway=stack.gateway,
            sandbox=stack.sandbox,
            catalog=catalog,
            bootstrap=broker.bootstrap,
            feedback_topic=feedback_topic,
        )


@pytest.fixture
def dashboard_env(
    dashboard_stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[None]:
    """Point the dashboard's settings at the test gateway (environment beats any .env)."""
    monkeypatch.chdir(tmp_path)  # no developer .env leaks in
    monkeypatch.setenv("EMERGIFY_GATEWAY_URL", dashboard_stack.gateway.url)
    monkeypatch.setenv("EMERGIFY_DASHBOARD_API_KEY", dashboard_stack.dashboard_key)
    monkeypatch.delenv("EMERGIFY_DASHBOARD_UPLOADS", raising=False)
    yield
