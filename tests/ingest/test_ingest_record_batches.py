"""Record batches built off the event loop are the batches aiokafka would send: its own reader
decodes them (CRC, codec, every key and value in order), and split at the batch size."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from emergify_ingest.partitioning import partitions_for_column
from emergify_ingest.record_batches import build_batches, build_batches_arrow


def murmur2_partition(key: bytes, partitions: int) -> int:
    """aiokafka's default partitioner's choice for ``key`` (all partitions available)."""
    every = list(range(partitions))
    return DefaultPartitioner()(key, every, every)


def _records(n: int) -> list[tuple[bytes, bytes]]:
    return [
        (f"{i:022d}".encode(), f'{{"row":{i},"name":"song {i} \u00e9"}}'.encode() * 5)
        for i in range(n)
    ]


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_batches_decode_to_the_records_in_order(compression: str | None) -> None:
    records = _records(5_000)
    batches = build_batches(records, 64 * 1024, compression)
    assert len(batches) > 5  # split at the batch size
    decoded = []
    for batch in batches:
        reader = DefaultRecordBatch(batch._build())
        assert reader.validate_crc()
        assert reader.compression_type == (3 if compression else 0)
        assert reader.producer_id == -1
        items = [(r.key, r.value) for r in reader]
        assert len(items) == batch.record_count()
        assert [r.offset for r in DefaultRecordBatch(batch._build())] == list(range(len(items)))
        decoded += items
    assert decoded == records


def test_lz4_batches_are_smaller() -> None:
    records = _records(2_000)
    plain = sum(b.size() for b in build_batches(records, 512 * 1024, None))
    packed = sum(b.size() for b in build_batches(records, 512 * 1024, "lz4"))
    assert packed < plain / 2


def test_a_record_larger_than_a_batch_gets_a_batch_of_its_own() -> None:
    # As in aiokafka's builder: the first record of a batch always fits.
    records = [(b"a", b"x" * 100), (b"b", b"y" * 20_000), (b"c", b"z" * 100)]
    batches = build_batches(records, 16 * 1024, "lz4")
    assert [b.record_count() for b in batches] == [1, 1, 1]
    decoded = [(r.key, r.value) for b in batches for r in DefaultRecordBatch(b._build())]
    assert decoded == records


@pytest.mark.parametrize("compression", [None, "lz4"])
def test_batches_built_from_columns_are_aiokafkas_bytes(compression: str | None) -> None:
    # Values of many sizes: 1-, 2- and 3-byte length varints, offsets past 63 and 8191.
    records = [
        (f"{i:022d}".encode(), json.dumps({"v": i, "n": "\u00e9" * (i % 300)}).encode())
        for i in range(20_000)
    ]
    keys = pa.array([k for k, _ in records], pa.binary())
    values = pa.array([v for _, v in records], pa.binary())
    stamp = 1_764_572_400_123
    batches = build_batches_arrow(keys, values, 512 * 1024, compression, stamp)
    assert len(batches) > 3
    at = 0
    for batch in batches:
        reader = DefaultRecordBatch(batch._build())
        assert reader.validate_crc()
        assert reader.compression_type == (3 if compression else 0)
        assert [(r.key, r.value) for r in reader] == records[at : at + batch.record_count()]
        assert len(batch._build()) <= 512 * 1024 or compression
        if compression is None:
            # The very bytes aiokafka's builder (as BatchBuilder configures it) writes.
            reference = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, 10**9)
            for i, (key, value) in enumerate(records[at : at + batch.record_count()]):
                assert reference.append(i, stamp, key, value, []) is not None
            assert bytes(reference.build()) == batch._build()
        at += batch.record_count()
    assert at == len(records)


def test_partitions_from_a_column_are_the_default_partitioners() -> None:
    keys = [f"{i:022d}".encode() for i in range(3_000)]
    mixed = [*keys[:10], b"short", b"", b"a much longer key than the others"]
    for sample in (keys, mixed):
        column = pa.array(sample, pa.binary())
        for partitions in (1, 3, 7):
            expected = [murmur2_partition(k, partitions) for k in sample]
            assert partitions_for_column(column, partitions).tolist() == expected
            # A sliced column (non-zero offset) reads the right bytes.
            assert partitions_for_column(column.slice(5), partitions).tolist() == expected[5:]
