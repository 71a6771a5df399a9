"""Fixtures for the stream processor's tests: producing to the real broker, new topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from kafka_io import produce

from emergify_cli.broker import EmbeddedBroker, create_topics


@pytest.fixture
def producer() -> Callable[..., None]:
    """``producer(bootstrap, topic, [(key, value), ...], linger_ms=50)``."""
    return produce


@pytest.fixture
def new_topic(broker: EmbeddedBroker) -> Callable[[int], str]:
    """Create a topic with a unique name on the session broker: ``new_topic(partitions)``."""

    def make(partitions: int = 3) -> str:
        name = f"t.{uuid.uuid4().hex[:10]}"
        create_topics(broker.bootstrap, [name], partitions)
        return name

    return make
