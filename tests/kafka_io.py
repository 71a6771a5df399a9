"""Producing to and reading from a real broker in tests, synchronously.

Importable as ``kafka_io`` (pytest puts tests/ on the path). Producers use acks=all and no
idempotence, like the services (the embedded broker cannot InitProducerId).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel


def publish_raw(bootstrap: str, topic: str, value: bytes, key: str | None = None) -> None:
    """Produce one record the way the stream processor does (acks=all, no idempotence)."""

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key.encode() if key else None)
        finally:
            await producer.stop()

    asyncio.run(send())


Record = tuple[bytes | None, bytes | None]


async def _produce(bootstrap: str, topic: str, records: list[Record], linger_ms: int) -> None:
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
    """Send ``records`` (key, value) to ``topic`` with acks=all and wait for every ack.

    The linger makes record batches hold many records: the case where the embedded broker's
    ListOffsets under-reports the log end."""
    asyncio.run(_produce(bootstrap, topic, list(records), linger_ms))


def publish(bootstrap: str, topic: str, key: str, event: BaseModel) -> None:
    """Produce one event envelope as JSON."""
    publish_raw(bootstrap, topic, event.model_dump_json().encode(), key)


async def _consume(
    bootstrap: str, topic: str, expected: int, deadline_s: float
) -> list[ConsumerRecord]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(records) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                records.extend(batch)
        # One more poll: anything beyond `expected` would show up here.
        for batch in (await consumer.getmany(timeout_ms=1_000)).values():
            records.extend(batch)
    finally:
        await consumer.stop()
    return records


def consume(
    bootstrap: str, topic: str, expected: int, deadline_s: float = 60.0
) -> list[ConsumerRecord]:
    """Every record of ``topic``, read from the start.

    Waits until at least ``expected`` records arrived (or ``deadline_s`` passed), then polls
    once more so that surplus records would be seen too.
    """
    return asyncio.run(_consume(bootstrap, topic, expected, deadline_s))
