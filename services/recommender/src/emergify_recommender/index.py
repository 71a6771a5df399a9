"""The in-memory catalog index: every song's features as NumPy arrays, plus the current model.

A :class:`SongIndex` never changes after it is built. A refresh builds a new one (from
scratch, or incrementally from the previous one) and the catalog swaps a single reference,
so a request in flight finishes on the index it started with.

Numbers are float64. The catalog is small next to the memory it costs (1M songs x 9
features = 72 MB per matrix), and float64 makes every distance the recommender returns
identical to a brute-force recomputation from the feature table, so ties and order are
reproducible; float32 would halve memory and bandwidth and is the first knob to turn if
the catalog outgrows RAM.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES

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


@dataclass(frozen=True, eq=False)
class SongIndex:
    """Every song of the catalog, row-aligned arrays, and the model they were scored with.

    Row ``i`` of every array describes ``records[i]``. ``clusters`` is -1 and ``members``
    holds one group with every row while no model exists.
    """

    records: tuple[SongRecord, ...]
    positions: MappingProxyType[str, int]
    raw: np.ndarray  # n x 9, the features as stored
    z: np.ndarray  # n x 9, standardized with (means, scales)
    pcs: np.ndarray  # n x pcs (n x 0 before a model)
    clusters: np.ndarray  # n, int64
    popularity: np.ndarray  # n, int64, -1 = unknown
    table_versions: np.ndarray  # n, int64
    sample_keys: np.ndarray  # n, uint32: a stable hash of the id, for deterministic samples
    dedup_keys: tuple[tuple[str, tuple[str, ...]], ...]
    artist_keys: tuple[tuple[str, ...], ...]
    search_texts: tuple[str, ...]
    members: tuple[np.ndarray, ...]  # rows of each cluster, ascending
    means: np.ndarray
    scales: np.ndarray
    model: LoadedModel | None
    watermark: int | None = None  # feature-table version known to be fully loaded
    last_batch_at: datetime | None = None
    last_update: datetime | None = None
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __len__(self) -> int:
        return len(self.records)

    @property
    def model_version(self) -> int | None:
        return self.model.version if self.model else None

    @property
    def table_version(self) -> int | None:
        """Highest feature-table version among the loaded songs."""
        return int(self.table_versions.max()) if len(self) else None

    def position(self, track_id: str) -> int | None:
        """Row of ``track_id``, or None when the song is not loaded."""
        return self.positions.get(track_id)

    def cluster_of_row(self, row: int) -> int | None:
        """The row's cluster under the loaded model (None before a model)."""
        return int(self.clusters[row]) if self.model else None

    def standardize(self, x: np.ndarray) -> np.ndarray:
        """``(x - means) / scales`` with the index's standardization."""
        return (np.asarray(x, dtype=np.float64) - self.means) / self.scales

    def cluster_of(self, z: np.ndarray) -> int | None:
        """Cluster of one standardized vector: its nearest centroid (None before a model)."""
        if self.model is None:
            return None
        return int(self.model.assign(self.model.project(z.reshape(1, -1)))[0])

    def cluster_order(self, z: np.ndarray) -> list[int]:
        """Clusters by ascending distance from ``z``'s PCA coordinates to their centroids."""
        if self.model is None:
            return []
        p = self.model.project(z.reshape(1, -1))[0]
        d = np.sqrt(((self.model.centroids - p) ** 2).sum(axis=1))
        return [int(c) for c in np.lexsort((np.arange(d.size), d))]


@dataclass(frozen=True)
class _Derived:
    raw: np.ndarray
    popularity: np.ndarray
    table_versions: np.ndarray
    sample_keys: np.ndarray
    dedup_keys: list[tuple[str, tuple[str, ...]]]
    artist_keys: list[tuple[str, ...]]
    search_texts: list[str]


def _derive(records: Sequence[SongRecord]) -> _Derived:
    n = len(records)
    raw = np.array([r.features for r in records], dtype=np.float64).reshape(n, N_FEATURES)
    dedup_keys, artist_keys, search_texts = [], [], []
    for r in records:
        artists = [normalize_text(a) for a in r.artists]
        dedup_keys.append((normalize_title(r.name), tuple(sorted(artists))))
        # Unique per song: "A feat. A" must not count twice against max_per_artist.
        artist_keys.append(tuple(dict.fromkeys(artists)))
        search_texts.append(normalize_text(r.name) + "\n" + " · ".join(artists))
    return _Derived(
        raw=raw,
        popularity=np.array(
            [-1 if r.popularity is None else r.popularity for r in records], dtype=np.int64
        ),
        table_versions=np.array([r.table_version for r in records], dtype=np.int64),
        sample_keys=np.array([zlib.crc32(r.track_id.encode()) for r in records], dtype=np.uint32),
        dedup_keys=dedup_keys,
        artist_keys=artist_keys,
        search_texts=search_texts,
    )


def _catalog_standardization(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Before any model exists the catalog's own mean and (population) std stand in.
    if raw.shape[0] == 0:
        return np.zeros(N_FEATURES), np.ones(N_FEATURES)
    std = raw.std(axis=0)
    return raw.mean(axis=0), np.where(std > 0, std, 1.0)


def _members(clusters: np.ndarray, model: LoadedModel | None) -> tuple[np.ndarray, ...]:
    if model is None:
        return (_readonly(np.arange(clusters.size, dtype=np.int64)),)
    order = np.argsort(clusters, kind="stable")
    bounds = np.searchsorted(clusters[order], np.arange(model.k + 1))
    return tuple(
        _readonly(order[bounds[c] : bounds[c + 1]].astype(np.int64)) for c in range(model.k)
    )


def _max_updated(records: Iterable[SongRecord]) -> datetime | None:
    stamps = [r.updated_at for r in records if r.updated_at is not None]
    return max(stamps) if stamps else None


def _assemble(
    records: tuple[SongRecord, ...],
    positions: dict[str, int],
    derived: _Derived,
    z: np.ndarray,
    pcs: np.ndarray,
    clusters: np.ndarray,
    means: np.ndarray,
    scales: np.ndarray,
    model: LoadedModel | None,
    watermark: int | None,
    last_batch_at: datetime | None,
    last_update: datetime | None,
) -> SongIndex:
    return SongIndex(
        records=records,
        positions=MappingProxyType(positions),
        raw=_readonly(derived.raw),
        z=_readonly(z),
        pcs=_readonly(pcs),
        clusters=_readonly(clusters),
        popularity=_readonly(derived.popularity),
        table_versions=_readonly(derived.table_versions),
        sample_keys=_readonly(derived.sample_keys),
        dedup_keys=tuple(derived.dedup_keys),
        artist_keys=tuple(derived.artist_keys),
        search_texts=tuple(derived.search_texts),
        members=_members(clusters, model),
        means=_readonly(np.array(means, dtype=np.float64)),
        scales=_readonly(np.array(scales, dtype=np.float64)),
        model=model,
        watermark=watermark,
        last_batch_at=last_batch_at,
        last_update=last_update,
    )


def _score(
    raw: np.ndarray, model: LoadedModel | None, means: np.ndarray, scales: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = (raw - means) / scales
    if model is None:
        return z, np.empty((raw.shape[0], 0)), np.full(raw.shape[0], -1, dtype=np.int64)
    pcs = model.project(z)
    return z, pcs, model.assign(pcs)


def _latest_per_id(records: Iterable[SongRecord]) -> dict[str, SongRecord]:
    latest: dict[str, SongRecord] = {}
    for r in records:
        seen = latest.get(r.track_id)
        if seen is None or r.table_version >= seen.table_version:
            latest[r.track_id] = r
    return latest


def build_index(
    records: Iterable[SongRecord],
    model: LoadedModel | None,
    *,
    watermark: int | None = None,
    last_batch_at: datetime | None = None,
) -> SongIndex:
    """Build an index from scratch. Clusters are recomputed from ``model`` (the table's
    ``cluster`` column may be from an older model)."""
    recs = tuple(_latest_per_id(records).values())
    derived = _derive(recs)
    if model is None:
        means, scales = _catalog_standardization(derived.raw)
    else:
        means, scales = model.means, model.scales
    z, pcs, clusters = _score(derived.raw, model, means, scales)
    return _assemble(
        recs,
        {r.track_id: i for i, r in enumerate(recs)},
        derived,
        z,
        pcs,
        clusters,
        means,
        scales,
        model,
        watermark,
        last_batch_at,
        _max_updated(recs),
    )


def with_songs(
    index: SongIndex,
    records: Iterable[SongRecord],
    *,
    watermark: int | None = None,
    last_batch_at: datetime | None = None,
) -> SongIndex:
    """A new index with ``records`` applied: new ids appended, known ids replaced in place.

    Only the touched rows are re-scored while a model exists. Before a model, the catalog's
    own statistics move with every song, so every row is re-standardized (cheap: no model).
    ``watermark``/``last_batch_at`` only ever move forward.
    """
    new_watermark = max((v for v in (index.watermark, watermark) if v is not None), default=None)
    new_last_batch = max(
        (v for v in (index.last_batch_at, last_batch_at) if v is not None), default=None
    )
    changed = [
        r
        for r in _latest_per_id(records).values()
        if (pos := index.positions.get(r.track_id)) is None or index.records[pos] != r
    ]
    if not changed:
        return replace(index, watermark=new_watermark, last_batch_at=new_last_batch)

    recs = list(index.records)
    positions = index.positions.copy()  # a C-level dict copy; dict(proxy) iterates
    touched: list[int] = []
    for r in changed:
        pos = positions.get(r.track_id)
        if pos is None:
            pos = positions[r.track_id] = len(recs)
            recs.append(r)
        else:
            recs[pos] = r
        touched.append(pos)
    rows = np.array(touched, dtype=np.int64)
    n = len(recs)
    part = _derive(changed)

    def grown(old: np.ndarray, fresh: np.ndarray) -> np.ndarray:
        out = np.empty((n, *old.shape[1:]), dtype=old.dtype)
        out[: old.shape[0]] = old
        out[rows] = fresh
        return out

    def grown_list(old: tuple, fresh: list) -> list:
        out = list(old) + [None] * (n - len(old))
        for i, value in zip(touched, fresh, strict=True):
            out[i] = value
        return out

    derived = _Derived(
        raw=grown(index.raw, part.raw),
        popularity=grown(index.popularity, part.popularity),
        table_versions=grown(index.table_versions, part.table_versions),
        sample_keys=grown(index.sample_keys, part.sample_keys),
        dedup_keys=grown_list(index.dedup_keys, part.dedup_keys),
        artist_keys=grown_list(index.artist_keys, part.artist_keys),
        search_texts=grown_list(index.search_texts, part.search_texts),
    )
    model = index.model
    if model is None:
        means, scales = _catalog_standardization(derived.raw)
        z, pcs, clusters = _score(derived.raw, None, means, scales)
    else:
        means, scales = index.means, index.scales
        z_part, pcs_part, clusters_part = _score(part.raw, model, means, scales)
        z = grown(index.z, z_part)
        pcs = grown(index.pcs, pcs_part)
        clusters = grown(index.clusters, clusters_part)
    last_update = max(
        (v for v in (index.last_update, _max_updated(changed)) if v is not None), default=None
    )
    return _assemble(
        tuple(recs),
        positions,
        derived,
        z,
        pcs,
        clusters,
        means,
        scales,
        model,
        new_watermark,
        new_last_batch,
        last_update,
    )
