"""The publisher's vectorized partitioner against aiokafka's own (Kafka's murmur2)."""

from __future__ import annotations

import random

from aiokafka.partitioner import DefaultPartitioner, murmur2

from emergify_ingest.partitioning import murmur2 as vectorized_murmur2
from emergify_ingest.partitioning import partitions_for_keys


def random_keys(n: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    # Every length 0..40 (each tail length of murmur2) and every byte value.
    return [bytes(rng.randrange(256) for _ in range(rng.randrange(41))) for _ in range(n)]


def test_murmur2_matches_the_reference_for_every_length() -> None:
    keys = [*random_keys(3_000, seed=1), b"", b"a", b"ab", b"abc", b"4uLU6hMCjMI75M1A2tKUQC"]
    got = vectorized_murmur2(keys)
    assert [int(h) for h in got] == [murmur2(k) & 0xFFFFFFFF for k in keys]


def test_partitions_match_the_default_partitioner() -> None:
    keys = [*random_keys(2_000, seed=2), *(f"track-{i}".encode() for i in range(2_000))]
    for count in (1, 2, 3, 7):
        partitions = list(range(count))
        expected = [DefaultPartitioner()(k, partitions, partitions) for k in keys]
        assert partitions_for_keys(keys, count).tolist() == expected
