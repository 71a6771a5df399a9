"""The batch layer never misses an update: songs uploaded while a model trains are covered
by a follow-up run that nobody asked for.

Real parts only: the embedded broker, the ingest app served over HTTP, the stream processor
as its own process (Spark inside), SQLite, a lake in a temporary folder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from catalog_fixtures import json_song, track_id
from pipeline_parts import WritePath, write_path
from testkit import INTERNAL_HEADERS, wait_for

from emergify_cli.broker import EmbeddedBroker


@pytest.fixture
def stack(broker: EmbeddedBroker, sqlite_url: str, tmp_path: Path) -> Iterator[WritePath]:
    with write_path(
        broker.bootstrap, sqlite_url, tmp_path, {"EMERGIFY_AUTO_RETRAIN": "true"}
    ) as parts:
        yield parts


@pytest.mark.slow
@pytest.mark.spark
def test_songs_uploaded_during_a_training_run_are_covered_by_the_next_model_unasked(
    stack: WritePath, sample_csv: Path
) -> None:
    ingest_url, processor_url, proc = stack.ingest_url, stack.processor_url, stack.processor

    def status() -> dict[str, Any] | None:
        assert proc.alive(), "the stream processor exited"
        with contextlib.suppress(httpx.HTTPError):
            response = httpx.get(
                f"{processor_url}/admin/status", timeout=10, headers=INTERNAL_HEADERS
            )
            if response.status_code == 200:
                return response.json()
        return None

    proc.wait_healthy(processor_url)
    wait_for(
        lambda: httpx.get(f"{ingest_url}/health", headers=INTERNAL_HEADERS).status_code == 200,
        60,
        "ingest ready",
    )

    # The sample catalog: the growth rule starts the first model once it is materialised.
    first = httpx.post(
        f"{ingest_url}/api/v1/songs/upload",
        files={"file": ("every_fresh_find.csv", sample_csv.read_bytes(), "text/csv")},
        timeout=120,
        headers=INTERNAL_HEADERS,
    )
    assert first.status_code == 202, first.text
    sample = first.json()["accepted"]
    wait_for(lambda: (s := status()) and s["training"], 300, "the first training run")
    # Once the run has read its songs (it caches the lake's latest versions, then scores k
    # candidates), songs uploaded cannot be in its model. Uploaded before that, on a quiet
    # machine they were read too, and the first model rightly covered them all.
    wait_for(lambda: "k scored" in proc.log_tail(200_000), 300, "the first run read its songs")

    # Songs uploaded while it trains: over the growth threshold, and no retrain request.
    extra = [
        json_song(track_id(i * 7919 + 12345), name=f"Arrived {i}", energy=(i % 97) / 97)
        for i in range(int(sample * 0.3))
    ]
    second = httpx.post(
        f"{ingest_url}/api/v1/songs", json=extra, timeout=120, headers=INTERNAL_HEADERS
    )
    assert second.status_code == 202, second.text
    assert second.json()["accepted"] == len(extra)
    during = status()
    assert during is not None and during["model"] is None  # acknowledged before any model
    total = sample + len(extra)

    def covered() -> dict[str, Any] | None:
        s = status()
        model = s and s["model"]
        done = model and s["songs"] == total and model["songs"] == total and not s["training"]
        return s if done else None

    final = wait_for(covered, 900, f"a model trained on all {total} songs", interval=2)
    assert final["model"]["version"] >= 2
    assert final["training_error"] is None and final["training_queued"] is False

    # Asked for while a run is under way: queued, and run once that one ends.
    asked = httpx.post(f"{processor_url}/admin/retrain", timeout=30, headers=INTERNAL_HEADERS)
    assert asked.status_code == 202 and asked.json()["status"] == "started", asked.text
    again = httpx.post(f"{processor_url}/admin/retrain", timeout=30, headers=INTERNAL_HEADERS)
    assert again.status_code == 202 and again.json()["status"] == "queued", again.text
    version = final["model"]["version"]
    wait_for(
        lambda: (s := status()) and s["model"]["version"] == version + 2 and not s["training"],
        900,
        "the requested run and the queued one",
        interval=2,
    )
