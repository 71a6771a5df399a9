"""Memory-lean columns for a million songs: no per-song Python objects.

A Python ``str`` costs ~50 bytes of overhead before its first character and a tuple of
them more again, so 1M songs held as records cost well over a gigabyte. The index keeps
text as one UTF-8 ``bytes`` buffer plus an offsets array (decoded on output), lists of
hashes as a flat array plus offsets, and everything else as NumPy arrays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

_INT32_LIMIT = 2**31 - 1


def _offsets(lengths: np.ndarray) -> np.ndarray:
    total = int(lengths.sum()) if lengths.size else 0
    # int32 offsets halve their cost; a buffer past 2 GiB needs int64.
    dtype = np.int32 if total <= _INT32_LIMIT else np.int64
    out = np.zeros(lengths.size + 1, dtype=dtype)
    np.cumsum(lengths, out=out[1:])
    out.flags.writeable = False
    return out


class TextColumn:
    """Optional strings as one UTF-8 buffer + offsets; ``None`` is kept in a mask."""

    __slots__ = ("buffer", "nulls", "offsets")

    def __init__(self, buffer: bytes, offsets: np.ndarray, nulls: np.ndarray | None) -> None:
        self.buffer = buffer
        self.offsets = offsets
        self.nulls = nulls

    @classmethod
    def from_strings(cls, values: Sequence[str | None]) -> TextColumn:
        """Pack ``values`` (``None`` allowed)."""
        encoded = [b"" if v is None else v.encode() for v in values]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        nulls = None
        if any(v is None for v in values):
            nulls = np.fromiter((v is None for v in values), dtype=bool, count=len(values))
            nulls.flags.writeable = False
        return cls(b"".join(encoded), _offsets(lengths), nulls)

    @classmethod
    def concat(cls, parts: Sequence[TextColumn]) -> TextColumn:
        """One column holding ``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        lengths = np.concatenate([np.diff(p.offsets).astype(np.int64) for p in parts])
        nulls = None
        if any(p.nulls is not None for p in parts):
            nulls = np.concatenate(
                [p.nulls if p.nulls is not None else np.zeros(len(p), dtype=bool) for p in parts]
            )
            nulls.flags.writeable = False
        return cls(b"".join(p.buffer for p in parts), _offsets(lengths), nulls)

    def __len__(self) -> int:
        return self.offsets.size - 1

    def raw(self, row: int) -> bytes:
        """The UTF-8 bytes of ``row`` (empty for ``None``)."""
        return self.buffer[int(self.offsets[row]) : int(self.offsets[row + 1])]

    def __getitem__(self, row: int) -> str | None:
        if self.nulls is not None and self.nulls[row]:
            return None
        return self.raw(row).decode()

    def replaced(self, rows: Sequence[int], values: Sequence[str | None]) -> TextColumn:
        """A copy with ``rows`` set to ``values``; rows at or past the end are appended
        (they must then be ``len(self)``, ``len(self)+1``, ... in order)."""
        n_old = len(self)
        n = max([n_old - 1, *rows]) + 1
        new = dict(zip(rows, values, strict=True))
        inside = sorted(r for r in new if r < n_old)
        # Copy the untouched stretches between replaced rows as whole slices.
        pieces: list[bytes] = []
        lengths = np.empty(n, dtype=np.int64)
        lengths[:n_old] = np.diff(self.offsets)
        start = 0
        for r in inside:
            pieces.append(self.buffer[int(self.offsets[start]) : int(self.offsets[r])])
            value = (new[r] or "").encode()
            pieces.append(value)
            lengths[r] = len(value)
            start = r + 1
        pieces.append(self.buffer[int(self.offsets[start]) :])
        for r in range(n_old, n):
            value = (new[r] or "").encode()
            pieces.append(value)
            lengths[r] = len(value)
        nulls = None
        if self.nulls is not None or any(v is None for v in values):
            nulls = np.zeros(n, dtype=bool)
            if self.nulls is not None:
                nulls[:n_old] = self.nulls
            for r, v in new.items():
                nulls[r] = v is None
            nulls.flags.writeable = False
        return TextColumn(b"".join(pieces), _offsets(lengths), nulls)

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return (
            len(self.buffer)
            + self.offsets.nbytes
            + (0 if self.nulls is None else self.nulls.nbytes)
        )


class HashListColumn:
    """A short list of 64-bit hashes per row (a song's artists), flat + offsets."""

    __slots__ = ("offsets", "values")

    def __init__(self, values: np.ndarray, offsets: np.ndarray) -> None:
        self.values = values
        self.offsets = offsets

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int]]) -> HashListColumn:
        """Pack ``lists`` of unsigned 64-bit hashes."""
        lengths = np.fromiter((len(x) for x in lists), dtype=np.int64, count=len(lists))
        values = np.fromiter((h for x in lists for h in x), dtype=np.uint64)
        values.flags.writeable = False
        return cls(values, _offsets(lengths))

    @classmethod
    def concat(cls, parts: Sequence[HashListColumn]) -> HashListColumn:
        """One column holding ``parts`` one after the other."""
        if len(parts) == 1:
            return parts[0]
        lengths = np.concatenate([np.diff(p.offsets).astype(np.int64) for p in parts])
        values = np.concatenate([p.values for p in parts])
        values.flags.writeable = False
        return cls(values, _offsets(lengths))

    def __len__(self) -> int:
        return self.offsets.size - 1

    def __getitem__(self, row: int) -> list[int]:
        return self.values[int(self.offsets[row]) : int(self.offsets[row + 1])].tolist()

    def take(self, rows: Sequence[int]) -> HashListColumn:
        """The lists of ``rows``, in that order."""
        return HashListColumn.from_lists([self[r] for r in rows])

    def replaced(self, rows: Sequence[int], values: Sequence[Sequence[int]]) -> HashListColumn:
        """A copy with ``rows`` set (rows past the end are appended, in order)."""
        n_old = len(self)
        new = dict(zip(rows, values, strict=True))
        n = max([n_old - 1, *rows]) + 1
        if all(r >= n_old for r in new):
            return HashListColumn.concat(
                [self, HashListColumn.from_lists([new[r] for r in range(n_old, n)])]
            )
        return HashListColumn.from_lists([new[r] if r in new else self[r] for r in range(n)])

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self.values.nbytes + self.offsets.nbytes


def hash64(text: str) -> int:
    """A stable 64-bit hash (blake2b), for keys compared by equality only."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def hash_key(parts: Iterable[str]) -> int:
    """:func:`hash64` of several strings joined by a separator no normalized text contains."""
    return hash64("\x1f".join(parts))
