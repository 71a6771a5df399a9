"""The listener-change feed: which listeners' feedback just committed, so their cached
state is dropped and the next recommendation reads it afresh.

Like the catalog change feed (:mod:`emergify_recommender.change_feed`): no consumer group,
because every replica caches listener states and needs every event; it starts at the latest
offset, and on each (re)connection forgets every cached state instead, since events may have
been missed while it was away. A missing broker is retried with exponential backoff.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from emergify_contracts.listener import ListenerChange
from emergify_recommender.config import Settings
from emergify_recommender.listeners import ListenerStates

log = structlog.get_logger()

FeedState = Literal["connecting", "connected", "reconnecting", "stopped"]


class ListenerFeed:
    """Consumes ``listener_changes_topic`` into :meth:`ListenerStates.invalidate`."""

    def __init__(self, settings: Settings, states: ListenerStates) -> None:
        self._settings = settings
        self._states = states
        self.state: FeedState = "connecting"
        self.events_applied = 0
        self.last_error: str | None = None

    def _consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            s.listener_changes_topic,
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id="emergify-recommender-listeners",
            metadata_max_age_ms=10_000,
            request_timeout_ms=10_000,
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
                # Whatever changed while disconnected is unknown: read every listener afresh.
                self._states.clear()
                self.state, self.last_error = "connected", None
                backoff = s.change_feed_retry_initial_seconds
                log.info("listener feed connected", partitions=len(consumer.assignment()))
                while True:
                    # Short polls: feedback must reach the next answer within seconds.
                    batches = await consumer.getmany(timeout_ms=200, max_records=500)
                    for records in batches.values():
                        for record in records:
                            self._apply(record.value)
            except asyncio.CancelledError:
                self.state = "stopped"
                raise
            except Exception as exc:
                self.state = "reconnecting"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "listener feed unavailable; retrying",
                    error=self.last_error,
                    retry_in_seconds=round(backoff, 2),
                )
            finally:
                try:
                    await consumer.stop()
                except Exception as exc:  # stopping a half-started client can fail too
                    log.debug("listener feed stop failed", error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, s.change_feed_retry_max_seconds)

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            change = ListenerChange.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring malformed listener change", error=str(exc)[:500])
            return
        self._states.invalidate(change.listener_ids, change.version)
        self.events_applied += 1
