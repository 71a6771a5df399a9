"""Publishing 100k songs-topic records to the embedded broker: the ingest service's publisher
(one batch per partition, lz4, acknowledgements collected after all chunks are handed over)
against the previous way (``AIOKafkaProducer.send`` per record, acks awaited per 5,000-record
chunk, no compression), in the same run. Prints wall and CPU seconds of each, and the load.

    uv run --frozen python bench/publish_throughput.py [--records 100000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

from aiokafka import AIOKafkaProducer

from emergify_cli.broker import EmbeddedBroker, create_topics, free_port
from emergify_ingest.config import Settings
from emergify_ingest.publisher import Record, SongPublisher

CHUNK = 5_000


async def per_record(producer: AIOKafkaProducer, topic: str, records: list[Record]) -> None:
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        futures = [await producer.send(topic, value=v, key=k) for k, v in chunk]
        await asyncio.gather(*futures)


async def batched(publisher: SongPublisher, records: list[Record]) -> None:
    acks = [await publisher.enqueue(records[i : i + CHUNK]) for i in range(0, len(records), CHUNK)]
    for a in acks:
        await a.wait()


async def run(settings: Settings, records: list[Record], rounds: int) -> None:
    old = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await old.start()
    new = SongPublisher(settings)
    await new.start()
    while not new.connected:
        await asyncio.sleep(0.05)
    try:
        for _ in range(rounds):
            for name, job in (
                ("send per record", lambda: per_record(old, settings.songs_topic, records)),
                ("batch per partition", lambda: batched(new, records)),
            ):
                wall, cpu = time.perf_counter(), time.process_time()
                await job()
                print(
                    f"{name:<20} {len(records)} records: {time.perf_counter() - wall:.2f} s wall, "
                    f"{time.process_time() - cpu:.2f} s CPU, load {os.getloadavg()[0]:.1f}",
                    flush=True,
                )
    finally:
        await old.stop()
        await new.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    port = free_port()
    broker = EmbeddedBroker(port).start()
    os.environ["EMERGIFY_KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
    try:
        settings = Settings()
        create_topics(broker.bootstrap, settings.topics(), settings.topic_partitions)
        # About the size of a real song event.
        value = json.dumps({"schema_version": 1, "song": {"name": "x" * 500}}).encode()
        records = [(f"{i:022d}".encode(), value) for i in range(args.records)]
        asyncio.run(run(settings, records, args.rounds))
    finally:
        broker.stop()


if __name__ == "__main__":
    main()
