"""The in-memory catalog index: every song as NumPy columns, plus the current model.

A :class:`SongIndex` never changes after it is built. A refresh builds a new one (from
scratch, or incrementally from the previous one) and the catalog swaps a single reference,
so a request in flight finishes on the index it started with.

Memory: features are kept once, exactly (``raw``, the float64 values the feature table
holds, packed as int32 decimal codes when they are short decimals, so every distance the
API returns equals a float64 brute-force recomputation), in the search cells
(:mod:`emergify_recommender.cells`); text is packed UTF-8
(:mod:`emergify_recommender.columns`). A full load turns each chunk of records into packed
columns at once, so no more than a chunk of per-song Python objects ever lives (they
would otherwise pin the allocator's arenas long after they are freed). 1M songs cost
~210 MB of columns instead of >1 GB of Python records.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from itertools import islice
from types import MappingProxyType
from typing import Any

import numpy as np

from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.cells import Cells, build_cells, updated_cells
from emergify_recommender.columns import (
    CodeBook,
    CodedTextColumn,
    HashListColumn,
    TextColumn,
    hash64,
    hash_key,
)

N_FEATURES = len(AUDIO_FEATURES)
_ASSIGN_CHUNK = 16_384

#: A version suffix that does not make a different recording: "Song - Remastered 2011",
#: "Song (Radio Edit)", "Song [Mono Version]". Remixes, live and acoustic takes sound
#: different, so they are *not* in the list and stay separate songs.
_VERSION_WORDS = r"(?:remaster(?:ed)?|version|edit|mono|stereo|explicit|clean)"
_VERSION_SUFFIX = re.compile(
    rf"\s*(?:\s-\s[^-]*\b{_VERSION_WORDS}\b[^-]*"
    rf"|\([^()]*\b{_VERSION_WORDS}\b[^()]*\)"
    rf"|\[[^\[\]]*\b{_VERSION_WORDS}\b[^\[\]]*\])\s*$",
    re.IGNORECASE,
)


def normalize_text(text: str) -> str:
    """Case- and width-insensitive form of a name: NFKC, casefolded, single spaces."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalize_title(name: str) -> str:
    """The title without version suffixes ("- Remastered 2011", "(Radio Edit)"), normalized."""
    title = unicodedata.normalize("NFKC", name).strip()
    while title[-1:] in (")", "]") or " - " in title:  # cheap test first: most titles are plain
        shorter = _VERSION_SUFFIX.sub("", title)
        if shorter == title or not shorter.strip():
            break
        title = shorter
    return normalize_text(title)


def dedup_key(name: str, artists: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """Two songs with the same key are the same recording for playlist purposes."""
    return normalize_title(name), tuple(sorted(normalize_text(a) for a in artists))


def as_utc(value: datetime | None) -> datetime | None:
    """``value`` with UTC attached when it is naive."""
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True, slots=True)
class SongRecord:
    """One song of the feature table, as the serving layer keeps it."""

    track_id: str
    name: str
    artists: tuple[str, ...]
    features: tuple[float, ...]
    table_version: int
    artist_ids: tuple[str, ...] = ()
    album: str | None = None
    release_date: str | None = None
    duration_ms: int | None = None
    popularity: int | None = None
    explicit: bool | None = None
    genres: tuple[str, ...] = ()
    key: int | None = None
    mode: int | None = None
    time_signature: int | None = None
    source: str | None = None
    upload_id: str | None = None
    ingested_at: datetime | None = None
    updated_at: datetime | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SongRecord:
        """Build a record from a ``songs`` table row (column name -> value)."""
        return cls(
            track_id=row["track_id"],
            name=row["name"],
            artists=tuple(row["artists"] or ()),
            features=tuple(float(row[f]) for f in AUDIO_FEATURES),
            table_version=int(row["table_version"]),
            artist_ids=tuple(row.get("artist_ids") or ()),
            album=row.get("album"),
            release_date=row.get("release_date"),
            duration_ms=row.get("duration_ms"),
            popularity=row.get("popularity"),
            explicit=row.get("explicit"),
            genres=tuple(row.get("genres") or ()),
            key=row.get("key"),
            mode=row.get("mode"),
            time_signature=row.get("time_signature"),
            source=row.get("source"),
            upload_id=row.get("upload_id"),
            ingested_at=as_utc(row.get("ingested_at")),
            updated_at=as_utc(row.get("updated_at")),
        )

    def feature_dict(self) -> dict[str, float]:
        """The nine audio features by name."""
        return dict(zip(AUDIO_FEATURES, self.features, strict=True))


_MIX = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9], dtype=np.uint64)


def id_hashes(ids: np.ndarray) -> np.ndarray:
    """A stable, well-mixed uint32 hash of each fixed-width track id (``S22``), vectorized."""
    padded = np.zeros((ids.size, 24), dtype=np.uint8)
    padded[:, : ids.itemsize] = ids.view(np.uint8).reshape(ids.size, ids.itemsize)
    words = padded.view("<u8")  # n x 3, the same on every platform
    h = (words * _MIX).sum(axis=1, dtype=np.uint64)  # wraps modulo 2**64, as intended
    h ^= h >> np.uint64(31)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(29)
    return (h >> np.uint64(32)).astype(np.uint32)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A :class:`PortableModel` as arrays, in :data:`AUDIO_FEATURES` order."""

    portable: PortableModel
    metrics: Mapping[str, Any]
    means: np.ndarray
    scales: np.ndarray
    components: np.ndarray  # features x pcs
    centroids: np.ndarray  # k x pcs

    @classmethod
    def from_portable(
        cls, portable: PortableModel, metrics: Mapping[str, Any] | None = None
    ) -> LoadedModel:
        """Check the artifact's shapes and reorder its features to ours if needed."""
        missing = [f for f in AUDIO_FEATURES if f not in portable.features]
        if missing:
            raise ValueError(f"model v{portable.version} lacks features: {', '.join(missing)}")
        order = [portable.features.index(f) for f in AUDIO_FEATURES]
        means = np.asarray(portable.means, dtype=np.float64)[order]
        scales = np.asarray(portable.scales, dtype=np.float64)[order]
        components = np.asarray(portable.components, dtype=np.float64)
        centroids = np.asarray(portable.centroids, dtype=np.float64)
        if components.ndim != 2 or components.shape[0] != len(portable.features):
            raise ValueError(f"model v{portable.version}: components must be features x pcs")
        components = components[order]
        if centroids.ndim != 2 or centroids.shape[1] != components.shape[1] or not len(centroids):
            raise ValueError(f"model v{portable.version}: centroids must be k x pcs, k >= 1")
        # A constant feature has scale 0; Spark's StandardScaler then outputs 0, as does x/1.
        scales = np.where(scales > 0, scales, 1.0)
        return cls(
            portable=portable,
            metrics=MappingProxyType(dict(metrics or {})),
            means=_readonly(means),
            scales=_readonly(scales),
            components=_readonly(components),
            centroids=_readonly(centroids),
        )

    @property
    def version(self) -> int:
        return self.portable.version

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def project(self, z: np.ndarray) -> np.ndarray:
        """PCA coordinates of standardized vectors (``z @ components``)."""
        return z @ self.components

    def assign(self, pcs: np.ndarray) -> np.ndarray:
        """Nearest centroid (Euclidean, as KMeans assigns) of each row of ``pcs``."""
        out = np.empty(pcs.shape[0], dtype=np.int64)
        # In chunks: rows x k x pcs temporaries for a million rows would cost gigabytes.
        for start in range(0, pcs.shape[0], _ASSIGN_CHUNK):
            part = pcs[start : start + _ASSIGN_CHUNK]
            d2 = ((part[:, None, :] - self.centroids[None, :, :]) ** 2).sum(axis=2)
            out[start : start + part.shape[0]] = d2.argmin(axis=1)
        return out


_SEP = "\x1f"  # joins a song's artists in one text cell; no normalized name contains it
_CHUNK = 1_000  # records turned into columns at a time: few per-song objects live at once
_ID_LEN = 22


def _index_dtype(n: int) -> type:
    return np.int32 if n < 2**31 - 1 else np.int64


@dataclass(frozen=True, eq=False)
class SongIndex:
    """Every song of the catalog as row-aligned, read-only columns, and the model.

    Row ``i`` of every column describes one song. Nothing here is a per-song Python object
    (see :mod:`emergify_recommender.columns`): 1M songs fit in about 200 MB.
    ``clusters`` is -1 while no model exists. The features (exactly as stored) live once,
    in the search cells, in cell order; :meth:`raw_of` and :meth:`z_of` read them by row.

    Fields the serving layer never ranks or lists by (artist ids, genres, dates, ...) are
    not held: the song detail reads them from the feature table.
    """

    ids: np.ndarray  # n, S22 track ids
    id_order: np.ndarray  # n, argsort of ids (lookups by binary search)
    names: TextColumn
    artists: TextColumn  # a song's artists joined by \x1f
    albums: CodedTextColumn  # an album's tracks share one entry
    popularity: np.ndarray  # n, int8 (0-100; wider if a value needs it), -1 = unknown
    table_versions: np.ndarray  # n, the smallest int type that holds them
    dedup_hashes: np.ndarray  # n, uint64: hash of dedup_key(name, artists)
    artist_hashes: HashListColumn  # per song: hashes of its distinct normalized artists
    search_text: TextColumn  # normalized "name\nartist · artist"
    clusters: np.ndarray  # n, int16 (int32 past 32,767 clusters)
    cells: Cells
    means: np.ndarray
    scales: np.ndarray
    model: LoadedModel | None
    watermark: int | None = None  # feature-table version known to be fully loaded
    last_batch_at: datetime | None = None
    last_update: datetime | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __len__(self) -> int:
        return int(self.ids.size)

    @property
    def model_version(self) -> int | None:
        return self.model.version if self.model else None

    @property
    def table_version(self) -> int | None:
        """Highest feature-table version among the loaded songs."""
        return int(self.table_versions.max()) if len(self) else None

    # --- one song --------------------------------------------------------------------

    def position(self, track_id: str) -> int | None:
        """Row of ``track_id``, or None when the song is not loaded."""
        try:
            key = track_id.encode("ascii")
        except UnicodeEncodeError:
            return None
        if not key or len(key) > _ID_LEN or not len(self):
            return None
        i = int(np.searchsorted(self.ids, key, sorter=self.id_order))
        if i < len(self) and self.ids[self.id_order[i]] == key:
            return int(self.id_order[i])
        return None

    def track_id(self, row: int) -> str:
        return self.ids[row].decode("ascii")

    def name(self, row: int) -> str:
        return self.names[row] or ""

    def artists_of(self, row: int) -> list[str]:
        text = self.artists[row]
        return text.split(_SEP) if text else []

    def album(self, row: int) -> str | None:
        return self.albums[row]

    def popularity_of(self, row: int) -> int | None:
        value = int(self.popularity[row])
        return None if value < 0 else value

    def features(self, row: int) -> tuple[float, ...]:
        return tuple(self.raw_of(row).tolist())

    def record(self, row: int) -> SongRecord:
        """The song as a :class:`SongRecord` (only the fields the index holds)."""
        return SongRecord(
            track_id=self.track_id(row),
            name=self.name(row),
            artists=tuple(self.artists_of(row)),
            features=self.features(row),
            table_version=int(self.table_versions[row]),
            album=self.album(row),
            popularity=self.popularity_of(row),
        )

    @property
    def records(self) -> _Records:
        """A lazy sequence of :meth:`record` (decodes on access; for tests and tools)."""
        return _Records(self)

    @property
    def sample_keys(self) -> np.ndarray:
        """Per row, a stable 32-bit hash of its track id, for deterministic samples
        (computed from ``ids`` on access: ~20 ms per million songs, no column kept)."""
        return id_hashes(self.ids)

    def cluster_of_row(self, row: int) -> int | None:
        """The row's cluster under the loaded model (None before a model)."""
        return int(self.clusters[row]) if self.model else None

    # --- vectors ---------------------------------------------------------------------

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """``(x - means) / scales`` with the index's standardization."""
        return (np.asarray(x, dtype=np.float64) - self.means) / self.scales

    def raw_of(self, rows: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The stored features of ``rows`` (float64)."""
        return self.cells.rows_raw(self.cells.where[rows]).T

    def z_of(self, rows: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """Exact float64 standardized vectors of ``rows``."""
        return self.standardize(self.raw_of(rows))

    @property
    def raw(self) -> np.ndarray:
        """Every row's features, in row order (a copy: n x 9 x 8 bytes; for tools/tests)."""
        return _readonly(self.raw_of(np.arange(len(self))))

    @property
    def z(self) -> np.ndarray:
        """Every standardized vector, row order, float64 (computed on each access)."""
        return _readonly(self.standardize(self.raw))

    def pcs_of(self, rows: np.ndarray) -> np.ndarray:
        """PCA coordinates of ``rows`` (rows x 0 before a model)."""
        if self.model is None:
            return np.empty((np.asarray(rows).size, 0))
        return self.model.project(self.z_of(rows))

    def cluster_of(self, z: np.ndarray) -> int | None:
        """Cluster of one standardized vector: its nearest centroid (None before a model)."""
        if self.model is None:
            return None
        return int(self.model.assign(self.model.project(z.reshape(1, -1)))[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the columns, in bytes."""
        arrays = (
            self.ids,
            self.id_order,
            self.popularity,
            self.table_versions,
            self.dedup_hashes,
            self.clusters,
        )
        columns = (self.names, self.artists, self.albums, self.artist_hashes, self.search_text)
        return sum(a.nbytes for a in arrays) + sum(c.nbytes for c in columns) + self.cells.nbytes


class _Records(Sequence[SongRecord]):
    def __init__(self, index: SongIndex) -> None:
        self._index = index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, row):  # type: ignore[no-untyped-def]
        if isinstance(row, slice):
            return [self._index.record(i) for i in range(*row.indices(len(self)))]
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self._index.record(row)


# --- building ----------------------------------------------------------------------------


@dataclass
class _Part:
    """Columns of a batch of records (row-aligned with it)."""

    ids: np.ndarray
    names: list[str]
    artists: list[str]
    albums: list[str | None]
    raw: np.ndarray
    popularity: np.ndarray
    table_versions: np.ndarray
    dedup_hashes: np.ndarray
    artist_hashes: list[list[int]]
    search_text: list[str]
    last_update: datetime | None


def _part(records: Sequence[SongRecord]) -> _Part:
    n = len(records)
    dedup, artist_hashes, search_text = [], [], []
    for r in records:
        artists = [normalize_text(a) for a in r.artists]
        dedup.append(hash_key([normalize_title(r.name), *sorted(artists)]))
        # Unique per song: "A feat. A" must not count twice against max_per_artist.
        artist_hashes.append([hash64(a) for a in dict.fromkeys(artists)])
        search_text.append(normalize_text(r.name) + "\n" + " · ".join(artists))
    return _Part(
        ids=np.array([r.track_id.encode("ascii") for r in records], dtype=f"S{_ID_LEN}"),
        names=[r.name for r in records],
        artists=[_SEP.join(r.artists) for r in records],
        albums=[r.album for r in records],
        raw=np.array([r.features for r in records], dtype=np.float64).reshape(n, N_FEATURES),
        popularity=_small_ints([-1 if r.popularity is None else r.popularity for r in records]),
        table_versions=_small_ints([r.table_version for r in records]),
        dedup_hashes=np.array(dedup, dtype=np.uint64),
        artist_hashes=artist_hashes,
        search_text=search_text,
        last_update=_max_updated(records),
    )


@dataclass
class _Packed:
    """A :class:`_Part` with its text and hash lists packed (no per-song objects left)."""

    ids: np.ndarray
    names: TextColumn
    artists: TextColumn
    albums: np.ndarray  # codes (see :class:`CodeBook`)
    raw: np.ndarray
    popularity: np.ndarray
    table_versions: np.ndarray
    dedup_hashes: np.ndarray
    artist_hashes: HashListColumn
    search_text: TextColumn
    last_update: datetime | None

    @classmethod
    def of(cls, part: _Part, albums: CodeBook) -> _Packed:
        return cls(
            ids=part.ids,
            names=TextColumn.from_strings(part.names),
            artists=TextColumn.from_strings(part.artists),
            albums=albums.encode(part.albums),
            raw=part.raw,
            popularity=part.popularity,
            table_versions=part.table_versions,
            dedup_hashes=part.dedup_hashes,
            artist_hashes=HashListColumn.from_lists(part.artist_hashes),
            search_text=TextColumn.from_strings(part.search_text),
            last_update=part.last_update,
        )


def _small_ints(values: Sequence[int] | np.ndarray) -> np.ndarray:
    """``values`` in the smallest signed int type that holds them (popularity, table
    versions: small numbers, a few MB saved per million songs)."""
    array = np.asarray(values, dtype=np.int64)
    for dtype in (np.int8, np.int16, np.int32):
        info = np.iinfo(dtype)
        if not array.size or (info.min <= array.min() and array.max() <= info.max):
            return array.astype(dtype)
    return array


def _catalog_standardization(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Before any model exists the catalog's own mean and (population) std stand in.
    if raw.shape[0] == 0:
        return np.zeros(N_FEATURES), np.ones(N_FEATURES)
    std = raw.std(axis=0)
    return raw.mean(axis=0), np.where(std > 0, std, 1.0)


def _max_updated(records: Iterable[SongRecord]) -> datetime | None:
    stamps = [r.updated_at for r in records if r.updated_at is not None]
    return max(stamps) if stamps else None


def _latest(*stamps: datetime | None) -> datetime | None:
    return max((s for s in stamps if s is not None), default=None)


def _clusters(z: np.ndarray, model: LoadedModel | None) -> np.ndarray:
    dtype = np.int16 if model is None or model.k <= np.iinfo(np.int16).max else np.int32
    if model is None:
        return np.full(z.shape[0], -1, dtype=dtype)
    return model.assign(model.project(z)).astype(dtype)


def _chunks(records: Iterable[SongRecord]) -> Iterator[list[SongRecord]]:
    it = iter(records)
    while chunk := list(islice(it, _CHUNK)):
        yield chunk


def build_index(
    records: Iterable[SongRecord],
    model: LoadedModel | None,
    *,
    watermark: int | None = None,
    last_batch_at: datetime | None = None,
    leaf: int | None = None,
) -> SongIndex:
    """Build an index from scratch. Clusters are recomputed from ``model`` (the table's
    ``cluster`` column may be from an older model). ``records`` may be a stream: it is
    turned into columns chunk by chunk. When an id repeats, its highest ``table_version``
    (the last of equals) wins."""
    # Albums repeat (an album's tracks), so only distinct ones are kept; artist credits are
    # kept per song: a dictionary of them would pin more allocator arenas than it saves.
    album_book = CodeBook()
    parts = [_Packed.of(_part(chunk), album_book) for chunk in _chunks(records)] or [
        _Packed.of(_part([]), album_book)
    ]
    ids = np.concatenate([p.ids for p in parts])
    keep = _winners(ids, np.concatenate([p.table_versions for p in parts]))
    names = TextColumn.concat([p.names for p in parts])
    artists = TextColumn.concat([p.artists for p in parts])
    albums = album_book.column(np.concatenate([p.albums for p in parts]))
    del album_book
    search_text = TextColumn.concat([p.search_text for p in parts])
    artist_hashes = HashListColumn.concat([p.artist_hashes for p in parts])
    raw = np.concatenate([p.raw for p in parts])
    popularity = np.concatenate([p.popularity for p in parts])
    table_versions = _small_ints(np.concatenate([p.table_versions for p in parts]))
    dedup = np.concatenate([p.dedup_hashes for p in parts])
    last_update = _latest(*(p.last_update for p in parts))
    del parts
    if keep is not None:  # repeated ids: rare (a caller's own list), so simple beats fast
        rows = keep.tolist()
        ids, raw, popularity = ids[keep], raw[keep], popularity[keep]
        table_versions, dedup = table_versions[keep], dedup[keep]
        names = TextColumn.from_strings([names[r] for r in rows])
        artists = TextColumn.from_strings([artists[r] for r in rows])
        albums = albums.take(keep)
        search_text = TextColumn.from_strings([search_text[r] for r in rows])
        artist_hashes = artist_hashes.take(rows)
    if model is None:
        means, scales = _catalog_standardization(raw)
    else:
        means, scales = model.means, model.scales
    z = (raw - means) / scales
    clusters = _clusters(z, model)
    cells = build_cells(raw, z, clusters, leaf)
    del z, raw
    return SongIndex(
        ids=_readonly(ids),
        id_order=_readonly(np.argsort(ids, kind="stable").astype(_index_dtype(ids.size))),
        names=names,
        artists=artists,
        albums=albums,
        popularity=_readonly(popularity),
        table_versions=_readonly(table_versions),
        dedup_hashes=_readonly(dedup),
        artist_hashes=artist_hashes,
        search_text=search_text,
        clusters=_readonly(clusters),
        cells=cells,
        means=_readonly(np.array(means, dtype=np.float64)),
        scales=_readonly(np.array(scales, dtype=np.float64)),
        model=model,
        watermark=watermark,
        last_batch_at=last_batch_at,
        last_update=last_update,
    )


def _winners(ids: np.ndarray, versions: np.ndarray) -> np.ndarray | None:
    """Rows to keep when ids repeat (None when they do not): per id, the highest version,
    the last of equals; kept in the order of each id's first appearance."""
    if np.unique(ids).size == ids.size:
        return None
    arrival = np.arange(ids.size)
    order = np.lexsort((arrival, versions, ids))
    last = np.ones(ids.size, dtype=bool)
    last[:-1] = ids[order][1:] != ids[order][:-1]
    winners = order[last]
    first = {}
    for row, key in enumerate(ids.tolist()):
        first.setdefault(key, row)
    return winners[np.argsort([first[k] for k in ids[winners].tolist()], kind="stable")]


def _same(index: SongIndex, row: int, r: SongRecord) -> bool:
    return (
        int(index.table_versions[row]) == r.table_version
        and index.features(row) == tuple(r.features)
        and index.name(row) == r.name
        and tuple(index.artists_of(row)) == tuple(r.artists)
        and index.album(row) == r.album
        and index.popularity_of(row) == r.popularity
    )


def with_songs(
    index: SongIndex,
    records: Iterable[SongRecord],
    *,
    watermark: int | None = None,
    last_batch_at: datetime | None = None,
) -> SongIndex:
    """A new index with ``records`` applied: new ids appended, known ids replaced in place.

    Only the touched rows are re-scored while a model exists, and new songs become extra
    search cells (no re-partitioning). Before a model, the catalog's own statistics move
    with every song, so every row is re-standardized and the cells rebuilt (cheap: no
    model means a small catalog). ``watermark``/``last_batch_at`` only ever move forward.
    """
    new_watermark = max((v for v in (index.watermark, watermark) if v is not None), default=None)
    new_last_batch = _latest(index.last_batch_at, last_batch_at)
    latest: dict[str, SongRecord] = {}
    for r in records:
        seen = latest.get(r.track_id)
        if seen is None or r.table_version >= seen.table_version:
            latest[r.track_id] = r
    changed = [
        r
        for r in latest.values()
        if (pos := index.position(r.track_id)) is None or not _same(index, pos, r)
    ]
    if not changed:
        return replace(index, watermark=new_watermark, last_batch_at=new_last_batch)

    n_old = len(index)
    touched: list[int] = []
    next_row = n_old
    for r in changed:
        pos = index.position(r.track_id)
        if pos is None:
            pos, next_row = next_row, next_row + 1
        touched.append(pos)
    rows = np.array(touched, dtype=np.int64)
    part = _part(changed)
    n = n_old + int((rows >= n_old).sum())

    def grown(old: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        out = np.empty((n, *old.shape[1:]), dtype=np.promote_types(old.dtype, fresh.dtype))
        out[:n_old] = old
        out[rows] = fresh
        return _readonly(out)

    ids = grown(index.ids, part.ids)
    appended = rows >= n_old
    if appended.any():
        new_rows = rows[appended]
        new_ids = part.ids[appended]
        by_id = np.argsort(new_ids, kind="stable")
        at = np.searchsorted(index.ids, new_ids[by_id], sorter=index.id_order)
        id_order = np.insert(index.id_order.astype(_index_dtype(n)), at, new_rows[by_id])
    else:
        id_order = index.id_order
    model = index.model
    if model is None:
        raw = grown(index.raw, part.raw)
        means, scales = _catalog_standardization(raw)
        z = (raw - means) / scales
        clusters = _clusters(z, None)
        cells = build_cells(raw, z, clusters)
        del z, raw
    else:
        means, scales = index.means, index.scales
        z_part = (part.raw - means) / scales
        clusters_part = _clusters(z_part, model)
        clusters = grown(index.clusters, clusters_part)
        cells = updated_cells(
            index.cells,
            rows[~appended],
            part.raw[~appended],
            z_part[~appended],
            rows[appended],
            part.raw[appended],
            z_part[appended],
            clusters_part[appended],
        )
    return SongIndex(
        ids=ids,
        id_order=_readonly(id_order),
        names=index.names.replaced(touched, part.names),
        artists=index.artists.replaced(touched, part.artists),
        albums=index.albums.replaced(touched, part.albums),
        popularity=grown(index.popularity, part.popularity),
        table_versions=grown(index.table_versions, part.table_versions),
        dedup_hashes=grown(index.dedup_hashes, part.dedup_hashes),
        artist_hashes=index.artist_hashes.replaced(touched, part.artist_hashes),
        search_text=index.search_text.replaced(touched, part.search_text),
        clusters=_readonly(clusters),
        cells=cells,
        means=_readonly(np.array(means, dtype=np.float64)),
        scales=_readonly(np.array(scales, dtype=np.float64)),
        model=model,
        watermark=new_watermark,
        last_batch_at=new_last_batch,
        last_update=_latest(index.last_update, part.last_update),
    )
