"""Following Kafka topics from their latest offsets: the loop every recommender feed shares.

No consumer group: every replica needs every event and none needs to resume where it
stopped, because each reloads what it holds (catalog, listener states, living playlists)
at start and on every reconnection. So a follower begins at the latest offset, resolves its
positions before it says "connected" (so "connected" means "will see the next event": that
is what tests and operators wait for), hands every record to its handler, and retries a
broker that is absent or goes away with exponential backoff. The handler must not raise
for a bad event (log and skip it): anything it raises is treated as a lost connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer

from emergify_recommender.config import Settings

log = structlog.get_logger()

FeedState = Literal["connecting", "connected", "reconnecting", "stopped"]
#: Called with each record's topic and value.
Handler = Callable[[str, bytes | None], Awaitable[None]]


class KafkaFollower:
    """Consumes ``topics`` from their latest offsets into ``handle`` until cancelled.

    ``on_connect`` runs after every (re)connection, once the positions are resolved and
    before the first record: the place to reload whatever events may have been missed.
    ``poll_ms`` bounds how long one poll waits; ``fetch_max_wait_ms`` (when set) bounds how
    long the broker holds a fetch (a held fetch is answered when its wait runs out, not when
    an event arrives, so it adds to every event's latency).
    """

    def __init__(
        self,
        settings: Settings,
        name: str,
        topics: Sequence[str],
        handle: Handler,
        *,
        client_id: str,
        on_connect: Callable[[], Awaitable[None]] | None = None,
        poll_ms: int = 1000,
        fetch_max_wait_ms: int | None = None,
    ) -> None:
        self._settings = settings
        self.name = name
        self._topics = tuple(topics)
        self._handle = handle
        self._client_id = client_id
        self._on_connect = on_connect
        self._poll_ms = poll_ms
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self.state: FeedState = "connecting"
        self.last_error: str | None = None

    def _consumer(self) -> AIOKafkaConsumer:
        extra = {}
        if self._fetch_max_wait_ms is not None:
            extra["fetch_max_wait_ms"] = self._fetch_max_wait_ms
        return AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=self._settings.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id=self._client_id,
            # Notice re-created topics and new partitions within seconds, not minutes.
            metadata_max_age_ms=10_000,
            request_timeout_ms=10_000,
            **extra,
        )

    async def run(self) -> None:
        """Consume until cancelled. Never raises anything but CancelledError."""
        s = self._settings
        backoff = s.change_feed_retry_initial_seconds
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                for tp in consumer.assignment():
                    await consumer.position(tp)
                if self._on_connect is not None:
                    await self._on_connect()
                self.state, self.last_error = "connected", None
                backoff = s.change_feed_retry_initial_seconds
                log.info(f"{self.name} connected", partitions=len(consumer.assignment()))
                while True:
                    batches = await consumer.getmany(timeout_ms=self._poll_ms, max_records=500)
                    for tp, records in batches.items():
                        for record in records:
                            await self._handle(tp.topic, record.value)
            except asyncio.CancelledError:
                self.state = "stopped"
                raise
            except Exception as exc:
                self.state = "reconnecting"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    f"{self.name} unavailable; retrying",
                    error=self.last_error,
                    retry_in_seconds=round(backoff, 2),
                )
            finally:
                try:
                    await consumer.stop()
                except Exception as exc:  # stopping a half-started client can fail too
                    log.debug(f"{self.name} stop failed", error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, s.change_feed_retry_max_seconds)


class FollowsTopics:
    """A feed driven by one :class:`KafkaFollower` (``self._follower``): its state, last
    error and run loop are the follower's."""

    _follower: KafkaFollower

    @property
    def state(self) -> FeedState:
        return self._follower.state

    @property
    def last_error(self) -> str | None:
        return self._follower.last_error

    async def run(self) -> None:
        """Consume until cancelled. Never raises anything but CancelledError."""
        await self._follower.run()
