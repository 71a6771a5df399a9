"""Memory-lean columns for a million songs: no per-song Python objects.

A Python ``str`` costs ~50 bytes of overhead before its first character and a tuple of
them more again, so 1M songs held as records cost well over a gigabyte. The index keeps
text as one UTF-8 ``bytes`` buffer plus an offsets array (decoded on output), repeated
text (albums) as codes into its distinct values, lists of hashes as a flat array plus
offsets, the audio features as exact int32 decimal codes (:class:`FeatureMatrix`), and
everything else as NumPy arrays.
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


class CodedTextColumn:
    """Optional strings that repeat (albums, artist credits): each distinct value once, in
    a :class:`TextColumn`, and per row an int32 code into it (-1 = ``None``).

    An album's tracks and an artist's songs share one entry, so 1M songs cost 4 MB of codes
    plus their distinct values instead of every row's text.
    """

    __slots__ = ("codes", "values")

    def __init__(self, codes: np.ndarray, values: TextColumn) -> None:
        self.codes = codes
        self.values = values
        codes.flags.writeable = False

    def __len__(self) -> int:
        return int(self.codes.size)

    def raw(self, row: int) -> bytes:
        """The UTF-8 bytes of ``row`` (empty for ``None``)."""
        code = int(self.codes[row])
        return b"" if code < 0 else self.values.raw(code)

    def __getitem__(self, row: int) -> str | None:
        code = int(self.codes[row])
        return None if code < 0 else self.values[code]

    def take(self, rows: np.ndarray) -> CodedTextColumn:
        """The values of ``rows``, in that order (the distinct values are shared)."""
        return CodedTextColumn(self.codes[rows], self.values)

    def replaced(self, rows: Sequence[int], values: Sequence[str | None]) -> CodedTextColumn:
        """A copy with ``rows`` set to ``values``; rows at or past the end are appended
        (then ``len(self)``, ``len(self)+1``, ... in order). New values are appended to the
        distinct ones without a lookup (a full load compacts them again)."""
        n = max([len(self) - 1, *rows]) + 1
        codes = np.full(n, -1, dtype=np.int32)
        codes[: len(self)] = self.codes
        fresh = [v for v in values if v is not None]
        at = len(self.values)
        for row, value in zip(rows, values, strict=True):
            if value is None:
                codes[row] = -1
            else:
                codes[row], at = at, at + 1
        extra = TextColumn.from_strings(fresh)
        return CodedTextColumn(
            codes, TextColumn.concat([self.values, extra]) if fresh else self.values
        )

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self.codes.nbytes + self.values.nbytes


class CodeBook:
    """Builds a :class:`CodedTextColumn` chunk by chunk: only distinct values are kept as
    Python strings while a catalog streams in."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}

    def encode(self, values: Iterable[str | None]) -> np.ndarray:
        """int32 codes of ``values`` (new distinct values get the next codes)."""
        codes = self._codes
        return np.fromiter(
            (-1 if v is None else codes.setdefault(v, len(codes)) for v in values),
            dtype=np.int32,
        )

    def column(self, codes: np.ndarray) -> CodedTextColumn:
        """The column of ``codes`` (rows) over every value seen so far."""
        return CodedTextColumn(codes, TextColumn.from_strings(list(self._codes)))


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


#: Most decimals tried when packing a feature as integers (10**9 keeps [0, 1] in int32).
_MAX_DECIMALS = 9
_DIVISORS = tuple(10.0**p for p in range(_MAX_DECIMALS + 1))


def _codes(values: np.ndarray, divisors: np.ndarray) -> np.ndarray | None:
    """int32 codes of ``values`` (features x n, float64) under ``divisors`` (per feature),
    or None unless every value decodes back to exactly itself (sign of zero included)."""
    scaled = np.rint(values * divisors[:, None])
    if scaled.size and np.abs(scaled).max() > _INT32_LIMIT:
        return None
    if not np.array_equal(scaled / divisors[:, None], values):  # also refuses NaN
        return None
    if np.signbit(values[values == 0]).any():  # -0.0 would come back as 0.0
        return None
    return scaled.astype(np.int32)


class FeatureMatrix:
    """Audio features, features x songs, stored exactly in half the bytes when they are
    short decimals.

    Features come with a few decimals (danceability 0.529, tempo 118.211, acousticness
    1.52e-06). Each feature ``f`` gets the fewest decimals ``p_f`` (at most 9) for which
    every value ``v`` is ``rint(v * 10**p_f) / 10**p_f`` exactly, and is kept as those
    int32 integers: decoding divides by ``10**p_f`` and gives back the very float64 the
    feature table holds (checked for every value when packing, so the search stays exact).
    When a feature does not round-trip or overflows int32, the whole matrix stays float64.
    1M songs: 34 MB instead of 69 MB.
    """

    __slots__ = ("divisors", "values")

    def __init__(self, values: np.ndarray, divisors: np.ndarray | None) -> None:
        self.values = values  # int32 codes (divisors given) or float64 features
        self.divisors = divisors  # per feature 10**p, float64; None: values are float64
        values.flags.writeable = False

    @classmethod
    def pack(cls, features: np.ndarray) -> FeatureMatrix:
        """Pack ``features`` (features x n, float64), as int32 codes when exact."""
        features = np.ascontiguousarray(features, dtype=np.float64)
        divisors = np.ones(features.shape[0])
        for f, row in enumerate(features):
            for divisor in _DIVISORS:
                if _codes(row[None, :], np.array([divisor])) is not None:
                    divisors[f] = divisor
                    break
            else:
                return cls(features, None)
        codes = _codes(features, divisors)
        assert codes is not None  # every row passed on its own
        return cls(codes, divisors)

    @property
    def packed(self) -> bool:
        """Whether the values are int32 decimal codes (else float64)."""
        return self.divisors is not None

    @property
    def n(self) -> int:
        return int(self.values.shape[1])

    def take(self, positions: np.ndarray | int) -> np.ndarray:
        """Float64 features of ``positions`` (features x len, or features for one int), a
        new array the caller may overwrite."""
        block = self.values.take(positions, axis=1)
        if self.divisors is None:
            return block
        divisors = self.divisors.reshape(-1, *([1] * (block.ndim - 1)))
        return np.divide(block, divisors, dtype=np.float64)

    def decoded(self) -> np.ndarray:
        """Every song's float64 features (features x n, a new array)."""
        if self.divisors is None:
            return self.values.copy()
        return np.divide(self.values, self.divisors[:, None], dtype=np.float64)

    def updated(
        self, positions: np.ndarray, features: np.ndarray, appended: np.ndarray
    ) -> FeatureMatrix:
        """A copy with ``positions`` set to ``features`` and ``appended`` added at the end
        (both features x m, float64). Re-packed from scratch when the new values need
        more decimals than the current codes hold."""
        if self.divisors is not None:
            replaced = _codes(features, self.divisors)
            added = _codes(appended, self.divisors)
            if replaced is not None and added is not None:
                values = self.values.copy()
                values[:, positions] = replaced
                return FeatureMatrix(np.concatenate([values, added], axis=1), self.divisors)
        values = self.decoded()
        values[:, positions] = features
        return FeatureMatrix.pack(np.concatenate([values, appended], axis=1))

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self.values.nbytes + (0 if self.divisors is None else self.divisors.nbytes)
