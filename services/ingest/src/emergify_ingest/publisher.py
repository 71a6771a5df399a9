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
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.codec import has_lz4
from aiokafka.errors import KafkaError

from emergify_contracts.topics import TopicRefused, ensure_topics
from emergify_ingest.config import Settings
from emergify_ingest.partitioning import partitions_for_column, partitions_for_keys
from emergify_ingest.record_batches import (
    PreparedBatch,
    batches_per_partition,
    build_batches_arrow,
)

log = structlog.get_logger()

#: A record ready to send: (key, value), both bytes.
Record = tuple[bytes, bytes]

_BROKER_ERRORS = (KafkaError, OSError, TimeoutError)


@dataclass
class PreparedRecords:
    """Records of the songs topic already partitioned and built into compressed batches (see
    :mod:`emergify_ingest.record_batches`), for a topic of ``partitions`` partitions."""

    count: int
    partitions: int
    batches: list[list[PreparedBatch]]
    #: The records themselves, for a topic whose partition count changed since.
    pairs: Callable[[], Sequence[Record]]

    def __len__(self) -> int:
        return self.count


class BrokerUnavailable(Exception):
    """The broker did not acknowledge a publish or cannot be reached; the message says why."""


class Acks:
    """The broker's pending acknowledgements of one :meth:`SongPublisher.enqueue`."""

    def __init__(
        self, publisher: SongPublisher, futures: list[asyncio.Future[object]], records: int
    ) -> None:
        self._publisher = publisher
        self._futures = futures
        self.records = records

    @property
    def done(self) -> bool:
        """True once every batch has its answer (acknowledged or failed)."""
        return all(f.done() for f in self._futures)

    async def wait(self) -> None:
        """Return once the broker acknowledged every record (``acks="all"``).

        Raises :class:`BrokerUnavailable` if it does not within the request timeout.
        """
        try:
            # Each batch is answered or failed within request_timeout_ms of being sent.
            async with asyncio.timeout(self._publisher._timeout_s * 2):
                results = await asyncio.gather(*self._futures, return_exceptions=True)
        except _BROKER_ERRORS as exc:
            self._publisher._acks_failed()
            raise BrokerUnavailable(
                f"the Kafka broker did not acknowledge the songs: {exc!r}"
            ) from exc
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            self._publisher._acks_failed()
            raise BrokerUnavailable(
                f"the Kafka broker did not acknowledge {len(failures)} batches of "
                f"{self.records} songs: {failures[0]!r}"
            )


def compression_type(setting: str) -> str | None:
    """aiokafka's ``compression_type`` for the ``kafka_compression`` setting."""
    if setting == "auto":
        # lz4 is cheap and effective on JSON, but aiokafka's codec (cramjam) is optional.
        return "lz4" if has_lz4() else None
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
        # Enqueues one after the other, so the records of consecutive calls keep their order.
        self._enqueue_lock = asyncio.Lock()
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
        acks = await self.enqueue(records, topic)
        await acks.wait()

    def prepare(self, records: Sequence[Record]) -> Sequence[Record] | PreparedRecords:
        """``records`` for the songs topic, partitioned and built into compressed batches off
        the event loop (call it from a worker thread); as they are when the topic's partitions
        are not known yet or a record does not fit a batch (:meth:`enqueue` then builds them
        as before). Thread-safe: it only reads the producer's metadata cache."""
        producer = self._producer
        compression = compression_type(self._settings.kafka_compression)
        if producer is None or not records or compression not in (None, "lz4"):
            return records
        known = producer.client.cluster.partitions_for_topic(self._settings.songs_topic)
        if not known:
            return records
        where = partitions_for_keys([k for k, _ in records], len(known))
        try:
            batches = batches_per_partition(
                records, where, len(known), self._settings.kafka_max_batch_bytes, compression
            )
        except ValueError:
            return records  # a record larger than a batch: enqueue says so
        return PreparedRecords(len(records), len(known), batches, lambda: records)

    def prepare_columns(
        self, keys: pa.Array, values: pa.Array
    ) -> Sequence[Record] | PreparedRecords:
        """:meth:`prepare` for records given as two binary columns (keys, values): partitioned
        and framed with Arrow kernels, no Python object per record."""

        def pairs() -> Sequence[Record]:
            return list(zip(keys.to_pylist(), values.to_pylist(), strict=True))

        producer = self._producer
        compression = compression_type(self._settings.kafka_compression)
        if producer is None or not len(keys) or compression not in (None, "lz4"):
            return pairs()
        known = producer.client.cluster.partitions_for_topic(self._settings.songs_topic)
        if not known:
            return pairs()
        where = partitions_for_column(keys, len(known))
        now_ms = int(time.time() * 1000)
        batches = []
        try:
            for n in range(len(known)):
                rows = pa.array(np.flatnonzero(where == n))
                batches.append(
                    build_batches_arrow(
                        pc.take(keys, rows),
                        pc.take(values, rows),
                        self._settings.kafka_max_batch_bytes,
                        compression,
                        now_ms,
                    )
                )
        except ValueError:
            return pairs()  # a record too large: enqueue says so
        return PreparedRecords(len(keys), len(known), batches, pairs)

    async def enqueue(
        self, records: Sequence[Record] | PreparedRecords, topic: str | None = None
    ) -> Acks:
        """Hand ``records`` to the producer, one batch per partition at a time, and return
        at once with their pending acknowledgements (await :meth:`Acks.wait`).

        Records are partitioned by key exactly as the default partitioner would, and
        enqueued in order: calls that follow each other keep their order per partition.
        :class:`PreparedRecords` built for the topic's partition count are sent as built.
        Raises :class:`BrokerUnavailable` if the broker cannot be reached.
        """
        prepared = records if isinstance(records, PreparedRecords) else None
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable(
                self.last_error or "the ingest service is still connecting to the Kafka broker"
            )
        await self._ensure_topic_exists(producer)
        topic = topic or self._settings.songs_topic
        try:
            # Metadata and a full queue each wait at most request_timeout_ms.
            async with asyncio.timeout(self._timeout_s * 2), self._enqueue_lock:
                partitions = sorted(await producer.partitions_for(topic))
                if (
                    prepared is not None
                    and topic == self._settings.songs_topic
                    and prepared.partitions == len(partitions)
                ):
                    sent = await asyncio.gather(
                        *(
                            self._send_prepared(producer, topic, partition, batches)
                            for partition, batches in zip(partitions, prepared.batches, strict=True)
                        )
                    )
                    return Acks(self, [f for futures in sent for f in futures], prepared.count)
                if isinstance(records, PreparedRecords):
                    # Built for another partition count: build them again, as plain records.
                    records = records.pairs()
                where = partitions_for_keys([k for k, _ in records], len(partitions))
                # One sender per partition, so every partition has a batch in flight.
                sent = await asyncio.gather(
                    *(
                        self._send_partition(
                            producer,
                            topic,
                            partition,
                            [records[i] for i in np.flatnonzero(where == n)],
                        )
                        for n, partition in enumerate(partitions)
                    )
                )
        except _BROKER_ERRORS as exc:
            self._topics_checked = False
            raise BrokerUnavailable(f"the Kafka broker did not accept the songs: {exc!r}") from exc
        return Acks(self, [f for futures in sent for f in futures], len(records))

    async def _send_prepared(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        partition: int,
        batches: list[PreparedBatch],
    ) -> list[asyncio.Future[object]]:
        return [await producer.send_batch(b, topic, partition=partition) for b in batches]

    async def _send_partition(
        self, producer: AIOKafkaProducer, topic: str, partition: int, records: list[Record]
    ) -> list[asyncio.Future[object]]:
        futures: list[asyncio.Future[object]] = []
        batch = producer.create_batch()
        for key, value in records:
            if batch.append(key=key, value=value, timestamp=None) is None:
                if batch.record_count() == 0:
                    raise BrokerUnavailable(
                        f"a song's event ({len(value)} bytes) is larger than a Kafka batch "
                        f"({self._settings.kafka_max_batch_bytes} bytes)"
                    )
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise BrokerUnavailable(
                        f"a song's event ({len(value)} bytes) is larger than a Kafka batch "
                        f"({self._settings.kafka_max_batch_bytes} bytes)"
                    )
        if batch.record_count():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _acks_failed(self) -> None:
        self._topics_checked = False

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
