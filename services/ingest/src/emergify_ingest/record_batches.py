"""Kafka record batches built and compressed in a worker thread, ready for the producer.

aiokafka builds a batch (and compresses it, with lz4 at level 9: LZ4-HC, ~30 ms per 512 KiB
here) inside the event loop when its sender takes it. For an upload of 100k songs that was
most of the ingest service's CPU and it stalled the loop. Here the batches of one chunk are
built in the ingest's worker thread with aiokafka's own batch builder (uncompressed), their
records section compressed with lz4's fast mode (level 1, ~3 ms per 512 KiB, the frame
format Kafka expects: independent blocks, no content checksum), and the v2 batch header
rewritten (codec bits, length, CRC-32C), exactly the bytes aiokafka would send but for the
compression level. :class:`PreparedBatch` hands them to ``AIOKafkaProducer.send_batch``.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import cramjam
import numpy as np
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.util import calc_crc32c

Record = tuple[bytes, bytes]

#: Offsets in the v2 record batch header (KIP-98): batchLength, crc, attributes, records.
_LENGTH_AT = 8
_CRC_AT = 17
_ATTRIBUTES_AT = 21
_RECORDS_AT = 61
_CODEC_LZ4 = 0x03
_LZ4_LEVEL = 1


class PreparedBatch:
    """A finished record batch, given to ``AIOKafkaProducer.send_batch`` in place of a
    ``BatchBuilder``: the sender asks it only for its bytes, size and record count."""

    def __init__(self, buffer: bytes, records: int) -> None:
        self._buffer = buffer
        self._records = records

    def _build(self) -> bytes:
        return self._buffer

    def _set_producer_state(self, producer_id: int, producer_epoch: int, seq: int) -> None:
        # Only an idempotent or transactional producer sets it; ours is neither (the
        # embedded broker cannot InitProducerId), so the batch keeps producer id -1.
        if producer_id != -1:
            raise RuntimeError("prepared batches are for a non-idempotent producer")

    def size(self) -> int:
        return len(self._buffer)

    def record_count(self) -> int:
        return self._records

    def closed(self) -> bool:
        return True

    def close(self) -> None:
        return None


def _lz4(buffer: bytearray) -> bytes:
    """``buffer`` (an uncompressed v2 batch) with its records section lz4-compressed."""
    compressor = cramjam.lz4.Compressor(
        level=_LZ4_LEVEL, content_checksum=False, block_linked=False
    )
    compressor.compress(bytes(memoryview(buffer)[_RECORDS_AT:]))
    out = bytearray(buffer[:_RECORDS_AT])
    out += bytes(compressor.finish())
    struct.pack_into(">i", out, _LENGTH_AT, len(out) - _LENGTH_AT - 4)
    (attributes,) = struct.unpack_from(">h", out, _ATTRIBUTES_AT)
    struct.pack_into(">h", out, _ATTRIBUTES_AT, attributes | _CODEC_LZ4)
    struct.pack_into(">I", out, _CRC_AT, calc_crc32c(out[_ATTRIBUTES_AT:]))
    return bytes(out)


def build_batches(
    records: Sequence[Record], max_batch_bytes: int, compression: str | None
) -> list[PreparedBatch]:
    """``records`` (one partition's, in order) as batches of at most ``max_batch_bytes``
    uncompressed bytes, compressed with ``compression`` (None or "lz4")."""
    if compression not in (None, "lz4"):
        raise ValueError(f"unsupported compression {compression!r}")
    batches: list[PreparedBatch] = []
    at = 0
    while at < len(records):
        builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, max_batch_bytes)
        count = 0
        for key, value in records[at:]:
            if builder.append(count, None, key, value, []) is None:
                break
            count += 1
        if count == 0:
            raise ValueError(
                f"a record ({len(records[at][1])} bytes) is larger than a Kafka batch "
                f"({max_batch_bytes} bytes)"
            )
        buffer = builder.build()
        batches.append(PreparedBatch(_lz4(buffer) if compression else bytes(buffer), count))
        at += count
    return batches


def batches_per_partition(
    records: Sequence[Record],
    where: np.ndarray,
    partitions: int,
    max_batch_bytes: int,
    compression: str | None,
) -> list[list[PreparedBatch]]:
    """The batches of each partition index (``where``: each record's partition index)."""
    return [
        build_batches(
            [records[i] for i in np.flatnonzero(where == n)], max_batch_bytes, compression
        )
        for n in range(partitions)
    ]
