"""Producing to and reading from a real broker in tests, synchronously.

Importable as ``kafka_io`` (pytest puts tests/ on the path). Producers use acks=all and no
idempotence, like the services (the embedded broker cannot InitProducerId).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord, TopicPartition
from kafka import KafkaConsumer
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
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        await consumer.topics()  # metadata, so that the topic's partitions are known
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        assert partitions, f"topic {topic} does not exist"
        consumer.assign(partitions)

        async def at_log_end() -> bool:
            # Read up to the high watermark of the Fetch responses (correct on the embedded
            # broker too), so that a surplus record is counted, not hoped absent.
            for tp in partitions:
                mark = consumer.highwater(tp)
                if mark is None or await consumer.position(tp) < mark:
                    return False
            return True

        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if len(records) >= expected and await at_log_end():
                break
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records


def consume(
    bootstrap: str, topic: str, expected: int, deadline_s: float = 60.0
) -> list[ConsumerRecord]:
    """Every record of ``topic``, read from the start.

    Reads until at least ``expected`` records arrived and every partition is read to its high
    watermark (or ``deadline_s`` passed), so that surplus records are in the answer too.
    """
    return asyncio.run(_consume(bootstrap, topic, expected, deadline_s))


def read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every value of ``topic`` from the start, until no record came for 3 s."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=3000
    )
    try:
        return [m.value for m in consumer]
    finally:
        consumer.close()
