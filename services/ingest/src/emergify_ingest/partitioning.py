"""Kafka's default partitioner (murmur2 of the key), vectorized over a chunk of keys.

The publisher builds one batch per partition itself instead of handing records to
``AIOKafkaProducer.send`` one by one, so it must put each key where the producer's default
partitioner would: the same track always lands in the same partition, in order. This is the
Java client's ``Utils.murmur2`` (which aiokafka's ``DefaultPartitioner`` follows), run with
NumPy on all keys of one length at a time instead of a Python loop per key.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_SEED = np.uint32(0x9747B28C)
_M = np.uint32(0x5BD1E995)


def _murmur2_same_length(data: np.ndarray) -> np.ndarray:
    """murmur2 of each row of ``data`` (uint8, shape (n, length)) as uint32."""
    n, length = data.shape
    h = np.full(n, _SEED ^ np.uint32(length & 0xFFFFFFFF), dtype=np.uint32)
    whole = length // 4
    if whole:
        words = np.ascontiguousarray(data[:, : whole * 4]).view("<u4").astype(np.uint32)
        for i in range(whole):
            k = words[:, i] * _M
            k ^= k >> np.uint32(24)
            k *= _M
            h *= _M
            h ^= k
    tail = length % 4
    base = whole * 4
    if tail:
        if tail >= 3:
            h ^= data[:, base + 2].astype(np.uint32) << np.uint32(16)
        if tail >= 2:
            h ^= data[:, base + 1].astype(np.uint32) << np.uint32(8)
        h ^= data[:, base].astype(np.uint32)
        h *= _M
    h ^= h >> np.uint32(13)
    h *= _M
    h ^= h >> np.uint32(15)
    return h


def murmur2(keys: Sequence[bytes]) -> np.ndarray:
    """Kafka's murmur2 hash of every key, as uint32 (aiokafka returns the same as an int)."""
    out = np.empty(len(keys), dtype=np.uint32)
    lengths = np.fromiter((len(k) for k in keys), dtype=np.int64, count=len(keys))
    with np.errstate(over="ignore"):
        for length in np.unique(lengths):
            where = np.flatnonzero(lengths == length)
            joined = b"".join(keys[i] for i in where)
            data = np.frombuffer(joined, dtype=np.uint8).reshape(len(where), int(length))
            out[where] = _murmur2_same_length(data)
    return out


def partitions_for_keys(keys: Sequence[bytes], partitions: int) -> np.ndarray:
    """The partition index (0 .. ``partitions`` - 1) the default partitioner picks per key."""
    return ((murmur2(keys) & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).astype(np.int64)


def partitions_for_column(keys: pa.Array, partitions: int) -> np.ndarray:
    """:func:`partitions_for_keys` of a binary or string column; keys of one length (track
    ids) are hashed straight from the column's buffer, without a Python object per key."""
    lengths = pc.binary_length(keys).to_numpy(zero_copy_only=False)
    if len(keys) and keys.null_count == 0 and (lengths == lengths[0]).all() and lengths[0]:
        _, offsets, data = keys.buffers()
        first = int(np.frombuffer(offsets, dtype=np.int32, count=1, offset=keys.offset * 4)[0])
        width = int(lengths[0])
        raw = np.frombuffer(data, dtype=np.uint8, count=len(keys) * width, offset=first)
        with np.errstate(over="ignore"):
            hashes = _murmur2_same_length(raw.reshape(len(keys), width))
        return ((hashes & np.uint32(0x7FFFFFFF)) % np.uint32(partitions)).astype(np.int64)
    return partitions_for_keys(pc.cast(keys, pa.binary()).to_pylist(), partitions)
