"""The change feed: catalog-change and model events from Kafka, applied to the catalog.

No consumer group: every recommender replica needs every event, and none needs to resume
where it stopped, because it loads the whole catalog at start. So the consumer begins at
the latest offset. A broker that is absent at start or goes away later is retried with
exponential backoff; the app keeps serving (the fallback poll keeps the catalog fresh
meanwhile), and a failing event is logged and skipped for the same reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from aiokafka import AIOKafkaConsumer
from pydantic import ValidationError

from emergify_contracts.events import CatalogChange, ModelPublished
from emergify_recommender.catalog import Catalog
from emergify_recommender.config import Settings
from emergify_recommender.index import SongIndex

log = structlog.get_logger()

FeedState = Literal["connecting", "connected", "reconnecting", "stopped"]
#: Called after a catalog change is applied, with the index that holds its songs.
ChangeHook = Callable[[CatalogChange, SongIndex], Awaitable[None]]


class ChangeFeed:
    """Consumes ``catalog_changes_topic`` and ``models_topic`` into a :class:`Catalog`."""

    def __init__(
        self, settings: Settings, catalog: Catalog, on_change: ChangeHook | None = None
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._on_change = on_change  # living playlists match the change's songs
        self.state: FeedState = "connecting"
        self.events_applied = 0
        self.last_error: str | None = None

    def _consumer(self) -> AIOKafkaConsumer:
        s = self._settings
        return AIOKafkaConsumer(
            s.catalog_changes_topic,
            s.models_topic,
            bootstrap_servers=s.kafka_bootstrap_servers,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            client_id="emergify-recommender",
            # Notice re-created topics and new partitions within seconds, not minutes.
            metadata_max_age_ms=10_000,
            request_timeout_ms=10_000,
            # Short fetches: a waiting fetch is answered when its wait runs out, not when an
            # event arrives, so the wait is added to every song's freshness.
            fetch_max_wait_ms=s.change_feed_fetch_max_wait_ms,
        )

    async def run(self) -> None:
        """Consume until cancelled. Never raises anything but CancelledError."""
        s = self._settings
        backoff = s.change_feed_retry_initial_seconds
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                # Resolve the starting positions now, so "connected" means "will see the
                # next event" (that is what tests and operators wait for).
                for tp in consumer.assignment():
                    await consumer.position(tp)
                self.state, self.last_error = "connected", None
                backoff = s.change_feed_retry_initial_seconds
                log.info("change feed connected", partitions=len(consumer.assignment()))
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=500)
                    for tp, records in batches.items():
                        for record in records:
                            await self._apply(tp.topic, record.value)
            except asyncio.CancelledError:
                self.state = "stopped"
                raise
            except Exception as exc:
                self.state = "reconnecting"
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning(
                    "change feed unavailable; retrying",
                    error=self.last_error,
                    retry_in_seconds=round(backoff, 2),
                )
            finally:
                try:
                    await consumer.stop()
                except Exception as exc:  # stopping a half-started client can fail too
                    log.debug("change feed stop failed", error=str(exc))
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, s.change_feed_retry_max_seconds)

    async def _apply(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            if topic == self._settings.catalog_changes_topic:
                change = CatalogChange.model_validate_json(value)
                index = await self._catalog.apply_change(change)
                if self._on_change is not None:
                    await self._on_change(change, index)
            elif topic == self._settings.models_topic:
                await self._catalog.apply_model(ModelPublished.model_validate_json(value))
            else:
                return
            self.events_applied += 1
        except ValidationError as exc:
            log.warning("ignoring malformed event", topic=topic, error=str(exc)[:500])
        except Exception as exc:
            # The database may be briefly unreachable; the poll catches up later.
            log.warning("event not applied", topic=topic, error=f"{type(exc).__name__}: {exc}")
