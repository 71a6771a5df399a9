"""Creating Emergify's topics: one routine for the CLI, the ingest service and the stream
processor (the embedded broker starts empty, and forgets its topics when it restarts)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = structlog.get_logger()


class TopicRefused(RuntimeError):
    """The broker answered a topic creation with an error other than "already exists"."""

    def __init__(self, topic: str, code: int) -> None:
        super().__init__(f"the broker refused to create topic {topic} (error {code})")
        self.topic = topic
        self.code = code


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    *,
    client_id: str = "emergify-admin",
    request_timeout_ms: int = 30_000,
) -> list[str]:
    """Create those of ``topics`` that do not exist yet; return the ones this call created.

    Idempotent: a topic another process creates meanwhile is fine. ``bootstrap`` is
    ``host:port[,host:port...]``. Broker errors (unreachable, timeouts) propagate as
    aiokafka raises them; a refused creation raises :class:`TopicRefused`.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id=client_id, request_timeout_ms=request_timeout_ms
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if not missing:
            return []
        new = [NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in missing]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        for topic, code, *_ in response.topic_errors:
            if code and code != TopicAlreadyExistsError.errno:
                raise TopicRefused(topic, code)
        log.info("created topics", topics=missing, partitions=partitions)
        return missing
    finally:
        await admin.close()


def ensure_topics_sync(
    bootstrap: str, topics: Iterable[str], partitions: int, **options: object
) -> list[str]:
    """:func:`ensure_topics` for code without an event loop (runs one of its own)."""
    return asyncio.run(ensure_topics(bootstrap, topics, partitions, **options))  # type: ignore[arg-type]
