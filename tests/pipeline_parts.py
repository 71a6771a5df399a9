"""Ingest served in a thread and the stream processor as its own process, sharing a lake
and a private set of topics: the write path of the system, for tests that restart or starve
its parts (broker restarts, follow-up retrains)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from servers import ServedApp
from testkit import ServiceProcess

from emergify_cli.broker import free_port
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app


@dataclass(frozen=True)
class WritePath:
    ingest_url: str
    processor_url: str
    processor: ServiceProcess


@contextlib.contextmanager
def write_path(
    bootstrap: str,
    database_url: str,
    tmp_path: Path,
    processor_env: Mapping[str, str] | None = None,
    ingest_settings: Mapping[str, Any] | None = None,
) -> Iterator[WritePath]:
    """Start the stream processor (``processor_env`` adds to or overrides its environment)
    and ingest (``ingest_settings`` adds to its settings); stop both, printing the
    processor's log tail."""
    tag = uuid.uuid4().hex[:8]
    topics = {
        "EMERGIFY_SONGS_TOPIC": f"songs.{tag}",
        "EMERGIFY_SONGS_DLQ_TOPIC": f"dlq.{tag}",
        "EMERGIFY_CATALOG_CHANGES_TOPIC": f"changes.{tag}",
        "EMERGIFY_MODELS_TOPIC": f"models.{tag}",
        "EMERGIFY_FEEDBACK_TOPIC": f"feedback.{tag}",
        "EMERGIFY_LISTENER_CHANGES_TOPIC": f"listener-changes.{tag}",
    }
    processor_url = f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        **topics,
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "EMERGIFY_DATABASE_URL": database_url,
        "EMERGIFY_LAKE_URI": str(tmp_path / "lake"),
        "EMERGIFY_CHECKPOINT_DIR": str(tmp_path / "checkpoint"),
        "EMERGIFY_MODELS_DIR": str(tmp_path / "models"),
        "EMERGIFY_STREAM_PROCESSOR_URL": processor_url,
        "EMERGIFY_LOG_LEVEL": "INFO",
        **(processor_env or {}),
    }
    processor = ServiceProcess("emergify_stream", env, tmp_path / "processor.log").start()
    settings = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=bootstrap,
        lake_uri=str(tmp_path / "lake"),
        **{k.removeprefix("EMERGIFY_").lower(): v for k, v in topics.items()},
        **(ingest_settings or {}),
    )
    ingest = ServedApp(create_app(settings)).start()
    try:
        yield WritePath(ingest.url, processor_url, processor)
    finally:
        ingest.stop()
        processor.terminate()
        print(processor.log_tail(4000))
