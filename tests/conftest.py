"""Fixtures shared by every test folder: the real broker, real PostgreSQL, real Spark.

Nothing here is mocked. Each fixture starts what it needs on free ports and stops it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from testkit import INTERNAL_TOKEN, drop_pg_database, new_pg_database

from emergify_cli.broker import EmbeddedBroker, free_port

# Every service refuses to start without an internal token and answers only requests that
# carry it: the services tests build read this one (subprocesses inherit it). In-process test
# clients call themselves "testserver" or "test"; tests of the Host check set their own names.
os.environ["EMERGIFY_INTERNAL_TOKEN"] = INTERNAL_TOKEN
os.environ["EMERGIFY_ALLOWED_HOSTS"] = "testserver,test"
# No recommender index snapshot (its default path is relative to the working directory: the
# repository, for an in-process app); the snapshot tests set their own path.
os.environ["EMERGIFY_INDEX_SNAPSHOT_PATH"] = ""

REPO = Path(__file__).resolve().parents[1]
SAMPLE_CSV = REPO / "data" / "every_fresh_find.csv"


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh embedded Kafka-compatible broker for the session."""
    b = EmbeddedBroker(free_port()).start()
    yield b
    b.stop()


@pytest.fixture
def fresh_broker() -> Iterator[EmbeddedBroker]:
    """A broker of the test's own, for tests that stop or restart it."""
    b = EmbeddedBroker(free_port()).start()
    yield b
    b.stop()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """SQLAlchemy URL of a new, empty PostgreSQL database, dropped after the test."""
    name, url = new_pg_database()
    yield url
    drop_pg_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'emergify.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Run the test once on SQLite (embedded default) and once on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'emergify.db'}"
    else:
        name, url = new_pg_database()
        yield url
        drop_pg_database(name)


@pytest.fixture(scope="session")
def spark():  # type: ignore[no-untyped-def]
    """One local SparkSession for the whole run: starting one is slow."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from emergify_stream.spark import build_spark_session

    session = build_spark_session(master="local[2]", app_name="emergify-tests")
    yield session
    session.stop()


@pytest.fixture
def sample_csv() -> Path:
    return SAMPLE_CSV
