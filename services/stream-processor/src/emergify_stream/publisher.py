"""Publishing the stream processor's events: dead letters, catalog changes, new models.

The driver is synchronous (Spark calls ``foreachBatch`` on its own thread), so this uses
kafka-python's thread-safe producer with the project's producer rules: ``acks="all"`` and
no idempotence (the embedded broker cannot hand out producer ids).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import structlog
from kafka import KafkaProducer
from pydantic import BaseModel

from emergify_contracts.events import CatalogChange, DeadLetter, ModelPublished
from emergify_contracts.listener import ListenerChange

log = structlog.get_logger()


class EventPublisher:
    """One lazily started producer for the topics the stream processor writes."""

    def __init__(
        self,
        bootstrap_servers: str,
        dlq_topic: str,
        catalog_topic: str,
        models_topic: str,
        listener_topic: str = "emergify.listener-changes.v1",
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.dlq_topic = dlq_topic
        self.catalog_topic = catalog_topic
        self.models_topic = models_topic
        self.listener_topic = listener_topic
        self._producer: KafkaProducer | None = None
        self._lock = threading.Lock()

    def _client(self) -> KafkaProducer:
        with self._lock:
            if self._producer is None:
                self._producer = KafkaProducer(
                    bootstrap_servers=self.bootstrap_servers.split(","),
                    acks="all",
                    enable_idempotence=False,
                    linger_ms=5,
                )
            return self._producer

    def _send(self, topic: str, items: Iterable[tuple[str | None, BaseModel]]) -> int:
        producer = self._client()
        futures = [
            producer.send(
                topic,
                key=key.encode() if key is not None else None,
                value=event.model_dump_json().encode(),
            )
            for key, event in items
        ]
        producer.flush()
        for f in futures:
            f.get(timeout=30)  # raise if any record was refused
        return len(futures)

    def dead_letters(self, letters: list[DeadLetter]) -> int:
        """Send refused records to the DLQ (keyed like the original record); wait for acks."""
        return self._send(self.dlq_topic, ((d.key, d) for d in letters)) if letters else 0

    def catalog_change(self, change: CatalogChange) -> None:
        """Tell the serving layer which songs changed (key "catalog", one ordered stream)."""
        self._send(self.catalog_topic, [("catalog", change)])

    def model_published(self, event: ModelPublished) -> None:
        """Announce a new current model (key "model")."""
        self._send(self.models_topic, [("model", event)])

    def listener_change(self, change: ListenerChange) -> None:
        """Tell the serving layer whose feedback changed (key "listeners", one ordered stream)."""
        self._send(self.listener_topic, [("listeners", change)])

    def close(self) -> None:
        """Flush and close the producer, if one was started."""
        with self._lock:
            if self._producer is not None:
                self._producer.close(timeout=10)
                self._producer = None
