"""Fixtures for the stream processor's tests: producing to the real broker, new topics."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable

import pytest
from aiokafka import AIOKafkaProducer

from emergify_cli.broker import EmbeddedBroker, create_topics

Record = tuple[bytes | None, bytes | None]


async def _produce(bootstrap: str, topic: str, records: Iterable[Record], linger_ms: int) -> None:
    # Linger so that record batches hold many records: the case where the embedded
    # broker's ListOffsets under-reports the log end.
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=linger_ms)
    await producer.start()
    try:
        futures = [await producer.send(topic, key=k, value=v) for k, v in records]
        await producer.flush()
        for f in futures:
            await f
    finally:
        await producer.stop()


def produce(bootstrap: str, topic: str, records: Iterable[Record], linger_ms: int = 50) -> None:
    """Send ``records`` (key, value) to ``topic`` with acks=all and wait for every ack."""
    asyncio.run(_produce(bootstrap, topic, list(records), linger_ms))


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
