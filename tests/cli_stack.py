"""A small real stack for the ``emergify`` command (tests/cli/): the gateway, ingest on the
embedded broker, and the recommender over the sample catalog (SQLite), each served by uvicorn
over HTTP. The stream processor is not running (the gateway reports it unavailable)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from catalog_fixtures import seed_catalog
from servers import serving
from testkit import answers_200, wait_for
from typer.testing import CliRunner

from emergify_cli import keys as keys_command
from emergify_cli import main as cli
from emergify_cli.broker import EmbeddedBroker, free_port
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender

ADMIN_KEY = "cli-test-admin-key-0123456789abcdef"


@dataclass(frozen=True)
class CliStack:
    gateway_url: str
    keys_file: Path
    songs_topic: str
    bootstrap: str

    def env(self, api_key: str = ADMIN_KEY) -> dict[str, str]:
        """The environment the ``emergify`` command reads its settings from."""
        return {"EMERGIFY_GATEWAY_URL": self.gateway_url, "EMERGIFY_ADMIN_API_KEY": api_key}


@pytest.fixture(scope="module")
def stack(broker: EmbeddedBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    folder = tmp_path_factory.mktemp("cli")
    database_url = f"sqlite:///{folder / 'emergify.db'}"
    seed_catalog(database_url)
    tag = uuid.uuid4().hex[:8]
    ingest = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=broker.bootstrap,
        lake_uri=str(folder / "lake"),
        songs_topic=f"cli.songs.{tag}",
        songs_dlq_topic=f"cli.dlq.{tag}",
        catalog_changes_topic=f"cli.changes.{tag}",
        models_topic=f"cli.models.{tag}",
    )
    keys_file = folder / "api-keys.json"
    with serving() as serve:
        ingest_url = serve(create_ingest(ingest)).url
        recommender = RecommenderSettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",  # its fallback poll suffices
            stream_processor_url=f"http://127.0.0.1:{free_port()}",
            refresh_interval_seconds=3600.0,
            speed_layer_timeout_seconds=0.2,
        )
        recommender_url = serve(create_recommender(recommender)).url
        gateway = GatewaySettings(
            _env_file=None,  # type: ignore[call-arg]
            admin_api_key=ADMIN_KEY,
            api_keys_file=keys_file,
            ingest_url=ingest_url,
            recommender_url=recommender_url,
            stream_processor_url=f"http://127.0.0.1:{free_port()}",  # not running
            spotify_gateway_url=f"http://127.0.0.1:{free_port()}",  # not running
            rate_limit_per_minute=0,
        )
        gateway_url = serve(create_gateway(gateway)).url
        wait_for(lambda: answers_200(f"{ingest_url}/health"), 60, "ingest to reach the broker")
        yield CliStack(gateway_url, keys_file, ingest.songs_topic, broker.bootstrap)


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A runner for ``emergify``; wide consoles, so that tables are not cut."""
    for console in (cli.console, keys_command.console):
        monkeypatch.setattr(console, "width", 250)
    return CliRunner()
