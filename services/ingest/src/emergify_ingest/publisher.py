"""Publishing accepted songs to the songs topic with aiokafka.

One producer per process, started in the app's lifespan. It connects in the background, so
the service comes up (and says "starting" on /health) even while the broker is still
starting. Every wait on the broker is bounded by ``kafka_request_timeout_ms``: a publish
either is acknowledged by the broker (``acks="all"``) or fails with :class:`BrokerUnavailable`,
never hangs. After a failure the topics are checked again before the next publish, because
the embedded broker forgets its topics when it restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import Sequence

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from emergify_contracts.topics import TopicRefused, ensure_topics
from emergify_ingest.config import Settings

log = structlog.get_logger()

#: A record ready to send: (key, value), both bytes.
Record = tuple[bytes, bytes]

_BROKER_ERRORS = (KafkaError, OSError, TimeoutError)


class BrokerUnavailable(Exception):
    """The broker did not acknowledge a publish or cannot be reached; the message says why."""


def compression_type(setting: str) -> str | None:
    """aiokafka's ``compression_type`` for the ``kafka_compression`` setting."""
    if setting == "auto":
        # lz4 is cheap and effective on JSON, but it is an optional dependency.
        return "lz4" if importlib.util.find_spec("lz4") is not None else None
    return None if setting == "none" else setting


class SongPublisher:
    """The service's Kafka producer for the songs topic."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._timeout_s = settings.kafka_request_timeout_ms / 1000
        self._producer: AIOKafkaProducer | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._topics_checked = False
        self._topics_lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        """True once the producer has reached the broker."""
        return self._producer is not None

    async def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._connecting = asyncio.create_task(self._connect_until_done(), name="kafka-connect")

    async def stop(self) -> None:
        """Stop connecting, flush what is pending (bounded) and close the producer."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connecting
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                async with asyncio.timeout(self._timeout_s + 1):
                    await producer.stop()
            except _BROKER_ERRORS as exc:
                log.warning("kafka producer did not stop cleanly", error=repr(exc))

    async def _connect_until_done(self) -> None:
        bootstrap = self._settings.kafka_bootstrap_servers
        while self._producer is None:
            try:
                await self._connect()
            except _BROKER_ERRORS as exc:
                self.last_error = f"cannot reach the Kafka broker at {bootstrap}: {exc!r}"
                log.warning(
                    "kafka not reachable yet; retrying", bootstrap=bootstrap, error=repr(exc)
                )
                await asyncio.sleep(self._settings.kafka_connect_backoff_s)
        log.info("kafka producer connected", bootstrap=bootstrap)
        try:
            async with self._topics_lock:
                await self.ensure_topics()
        except BrokerUnavailable as exc:
            # Not fatal: the next publish checks the topics again.
            log.warning("could not create topics at start-up", error=str(exc))

    async def _connect(self) -> None:
        s = self._settings
        producer = AIOKafkaProducer(
            bootstrap_servers=s.kafka_bootstrap_servers,
            client_id="emergify-ingest",
            acks="all",
            # The embedded broker cannot InitProducerId; acks="all" is the durability we rely on.
            enable_idempotence=False,
            linger_ms=s.kafka_linger_ms,
            max_batch_size=s.kafka_max_batch_bytes,
            request_timeout_ms=s.kafka_request_timeout_ms,
            compression_type=compression_type(s.kafka_compression),
        )
        try:
            async with asyncio.timeout(self._timeout_s):
                await producer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer
        self.last_error = None

    async def ensure_topics(self) -> None:
        """Create the Emergify topics that do not exist yet (idempotent)."""
        s = self._settings
        try:
            async with asyncio.timeout(self._timeout_s * 2):
                await ensure_topics(
                    s.kafka_bootstrap_servers,
                    s.topics(),
                    s.topic_partitions,
                    client_id="emergify-ingest-admin",
                    request_timeout_ms=s.kafka_request_timeout_ms,
                )
        except TopicRefused as exc:
            raise BrokerUnavailable(str(exc)) from exc
        except _BROKER_ERRORS as exc:
            raise BrokerUnavailable(f"cannot check or create the topics: {exc!r}") from exc
        self._topics_checked = True

    async def publish(self, records: Sequence[Record], topic: str | None = None) -> None:
        """Send ``records`` to ``topic`` (the songs topic by default) and wait until the broker
        acknowledges all of them.

        Raises :class:`BrokerUnavailable` if that does not happen within the timeouts.
        """
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable(
                self.last_error or "the ingest service is still connecting to the Kafka broker"
            )
        await self._ensure_topic_exists(producer)
        topic = topic or self._settings.songs_topic
        try:
            # Metadata, a full buffer and the acks each wait at most request_timeout_ms.
            async with asyncio.timeout(self._timeout_s * 3):
                futures = [await producer.send(topic, value=v, key=k) for k, v in records]
                results = await asyncio.gather(*futures, return_exceptions=True)
        except _BROKER_ERRORS as exc:
            self._topics_checked = False
            raise BrokerUnavailable(f"the Kafka broker did not accept the songs: {exc!r}") from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._topics_checked = False
            raise BrokerUnavailable(
                f"the Kafka broker did not acknowledge {len(failures)} of {len(records)} songs: "
                f"{failures[0]!r}"
            )

    async def _ensure_topic_exists(self, producer: AIOKafkaProducer) -> None:
        # One metadata round trip per chunk. It fails fast when the broker is gone, and it
        # notices a broker that came back without its topics: the embedded broker forgets them
        # on restart and then acknowledges sends to a missing topic without keeping them.
        try:
            async with asyncio.timeout(self._timeout_s):
                cluster = await producer.client.fetch_all_metadata()
        except _BROKER_ERRORS as exc:
            raise BrokerUnavailable(
                f"the Kafka broker at {self._settings.kafka_bootstrap_servers} does not answer: "
                f"{exc!r}"
            ) from exc
        if self._settings.songs_topic not in cluster.topics():
            self._topics_checked = False
        if not self._topics_checked:
            async with self._topics_lock:
                if not self._topics_checked:
                    await self.ensure_topics()

    async def probe(self) -> str | None:
        """None when the broker answers a metadata request, else what is wrong."""
        producer = self._producer
        if producer is None:
            return self.last_error or "connecting to the Kafka broker"
        try:
            async with asyncio.timeout(self._settings.health_probe_timeout_s):
                await producer.client.fetch_all_metadata()
        except _BROKER_ERRORS as exc:
            bootstrap = self._settings.kafka_bootstrap_servers
            return f"the Kafka broker at {bootstrap} does not answer: {exc!r}"
        return None
