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
import pyarrow as pa
import pyarrow.compute as pc
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


# --- whole columns at a time -------------------------------------------------------------

_HEADER = struct.Struct(">qiibIhiqqqhii")
_MAX_VARINT_BYTES = 5  # enough for sizes below 2**34


def _zigzag_varints(values: np.ndarray) -> pa.Array:
    """Kafka's zigzag varint of each value (non-negative, < 2**34) as a binary array."""
    z = values.astype(np.uint64) << np.uint64(1)
    if len(z) and int(z.max()) >= 1 << (7 * _MAX_VARINT_BYTES):
        raise ValueError("a size too large for a record")
    sizes = np.ones(len(z), dtype=np.int64)
    for i in range(1, _MAX_VARINT_BYTES):
        sizes += z >= np.uint64(1 << (7 * i))
    groups = np.empty((len(z), _MAX_VARINT_BYTES), dtype=np.uint8)
    for i in range(_MAX_VARINT_BYTES):
        more = (sizes > i + 1).astype(np.uint8) << np.uint8(7)
        groups[:, i] = ((z >> np.uint64(7 * i)) & np.uint64(0x7F)).astype(np.uint8) | more
    data = groups[np.arange(_MAX_VARINT_BYTES) < sizes[:, None]]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32)
    return pa.Array.from_buffers(
        pa.binary(), len(z), [None, pa.py_buffer(offsets), pa.py_buffer(data.tobytes())]
    )


def _lengths(column: pa.Array) -> np.ndarray:
    return pc.binary_length(column).to_numpy(zero_copy_only=False).astype(np.int64)


def _batch_bounds(upper: np.ndarray, max_batch_bytes: int) -> list[tuple[int, int]]:
    """Greedy split of records (``upper``: a bound on each record's size) into batches whose
    records fit ``max_batch_bytes`` with the header; a batch holds at least one record."""
    ends = np.cumsum(upper)
    bounds = []
    start = 0
    while start < len(upper):
        before = int(ends[start - 1]) if start else 0
        end = int(np.searchsorted(ends, before + max_batch_bytes - _RECORDS_AT, side="right"))
        end = max(end, start + 1)
        bounds.append((start, end))
        start = end
    return bounds


def build_batches_arrow(
    keys: pa.Array,
    values: pa.Array,
    max_batch_bytes: int,
    compression: str | None,
    timestamp_ms: int,
) -> list[PreparedBatch]:
    """The records ``keys[i]``, ``values[i]`` (binary, one partition's, in order) as record
    batches, built with Arrow kernels instead of one Python call per record: the bytes
    aiokafka's builder writes for records stamped ``timestamp_ms``."""
    if compression not in (None, "lz4"):
        raise ValueError(f"unsupported compression {compression!r}")
    n = len(keys)
    if n == 0:
        return []
    key_lengths, value_lengths = _lengths(keys), _lengths(values)
    # attributes, timestamp delta (0), offset delta, key length, value length, headers (0),
    # and the record's own length: at most 2 + 3 * 5 + 1 + 5 bytes besides key and value.
    bounds = _batch_bounds(key_lengths + value_lengths + 23, max_batch_bytes)
    position = np.arange(n, dtype=np.int64)
    offset_delta = position.copy()
    for start, end in bounds:
        offset_delta[start:end] -= start
    offset_varints = _zigzag_varints(offset_delta)
    key_varints = _zigzag_varints(key_lengths)
    value_varints = _zigzag_varints(value_lengths)
    body_lengths = (
        2
        + _lengths(offset_varints)
        + _lengths(key_varints)
        + key_lengths
        + _lengths(value_varints)
        + value_lengths
        + 1
    )
    zero2 = pa.scalar(b"\x00\x00", pa.binary())
    records = pc.binary_join_element_wise(
        _zigzag_varints(body_lengths),
        zero2,
        offset_varints,
        key_varints,
        keys,
        value_varints,
        values,
        pa.scalar(b"\x00", pa.binary()),
        pa.scalar(b"", pa.binary()),
    )
    _, record_offsets, record_data = records.buffers()
    starts = np.frombuffer(record_offsets, dtype=np.int32, count=n + 1, offset=records.offset * 4)
    blob = memoryview(record_data)
    batches = []
    for start, end in bounds:
        payload = blob[starts[start] : starts[end]]
        count = end - start
        attributes = 0
        if compression:
            compressor = cramjam.lz4.Compressor(
                level=_LZ4_LEVEL, content_checksum=False, block_linked=False
            )
            compressor.compress(bytes(payload))
            payload = memoryview(bytes(compressor.finish()))
            attributes = _CODEC_LZ4
        buffer = bytearray(_RECORDS_AT + len(payload))
        buffer[_RECORDS_AT:] = payload
        _HEADER.pack_into(
            buffer,
            0,
            0,
            len(buffer) - _LENGTH_AT - 4,
            -1,
            2,
            0,
            attributes,
            count - 1,
            timestamp_ms,
            timestamp_ms,
            -1,  # producer id: not idempotent
            -1,
            0,  # base sequence, as aiokafka's BatchBuilder writes it
            count,
        )
        struct.pack_into(">I", buffer, _CRC_AT, calc_crc32c(buffer[_ATTRIBUTES_AT:]))
        batches.append(PreparedBatch(bytes(buffer), count))
    return batches
