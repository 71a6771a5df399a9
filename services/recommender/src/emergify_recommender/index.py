"""The in-memory catalog index: every song as NumPy columns, plus the current model.

A :class:`SongIndex` never changes after it is built. A refresh builds a new one (from
scratch, or incrementally from the previous one) and the catalog swaps a single reference,
so a request in flight finishes on the index it started with.

Memory: features are kept once, exactly (``raw``, the float64 values the feature table
holds, packed as int32 decimal codes when they are short decimals, so every distance the
API returns equals a float64 brute-force recomputation), in the search cells
(:mod:`emergify_recommender.cells`); text is packed UTF-8
(:mod:`emergify_recommender.columns`). Building and updating an index:
:mod:`emergify_recommender.build`; the memory figures: bench/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

import numpy as np

from emergify_contracts.similarity import typical_distances
from emergify_contracts.song import AUDIO_FEATURES
from emergify_recommender.artist_vectors import N_ARTIST, ArtistVectors, Similarity
from emergify_recommender.cells import Cells
from emergify_recommender.columns import CodedTextColumn, HashListColumn, TextColumn
from emergify_recommender.model import LoadedModel
from emergify_recommender.records import SongRecord
from emergify_recommender.text_keys import id_hashes

N_FEATURES = len(AUDIO_FEATURES)

ARTIST_SEP = "\x1f"  # joins a song's artists in one text cell; no normalized name contains it
ID_LEN = 22


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def _unit_weights() -> np.ndarray:
    return _readonly(np.ones(N_FEATURES))


def row_dtype(n: int) -> type:
    """The integer type of row numbers in a catalog of ``n`` songs."""
    return np.int32 if n < 2**31 - 1 else np.int64


@dataclass(frozen=True, eq=False)
class SongIndex:
    """Every song of the catalog as row-aligned, read-only columns, and the model.

    Row ``i`` of every column describes one song. Nothing here is a per-song Python object
    (see :mod:`emergify_recommender.columns`).
    ``clusters`` is -1 while no model exists. The features (exactly as stored) live once,
    in the search cells, in cell order; :meth:`raw_of` and :meth:`z_of` read them by row.

    Fields the serving layer never ranks or lists by (artist ids, genres, dates, ...) are
    not held: the song detail reads them from the feature table.
    """

    ids: np.ndarray  # n, S22 track ids
    id_order: np.ndarray  # n, intp: argsort of ids (lookups by binary search; NumPy converts
    # any other sorter type to intp, the whole array, on every search)
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
    #: Per standardized feature, its weight in the distance (sum_f w_f |z_f - q_f|).
    weights: np.ndarray = field(default_factory=_unit_weights)
    #: The served model's artist profiles and combination table (None: audio only, as
    #: before a model, or for a model without profiles); each song's row is in the cells.
    artist_table: ArtistVectors | None = None
    #: The default weight of the artist part (the model's stored similarity setting).
    artist_weight: float = 0.0
    #: The similarity setting the served model was published with (None before a model).
    similarity: Similarity | None = None

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
        if not key or len(key) > ID_LEN or not len(self):
            return None
        i = int(np.searchsorted(self.ids, key, sorter=self.id_order))
        if i < len(self) and self.ids[self.id_order[i]] == key:
            return int(self.id_order[i])
        return None

    def positions(self, track_ids: Sequence[str]) -> np.ndarray:
        """Rows of ``track_ids`` (int64), -1 where a song is not loaded: one binary search
        for all of them."""
        out = np.full(len(track_ids), -1, dtype=np.int64)
        if not len(self) or not len(track_ids):
            return out
        keys = np.array(
            [t.encode("ascii", "replace") if t.isascii() else b"" for t in track_ids],
            dtype=f"S{ID_LEN + 1}",
        )
        found = np.searchsorted(self.ids, keys, sorter=self.id_order)
        rows = self.id_order[np.minimum(found, len(self) - 1)]
        hit = (found < len(self)) & (self.ids[rows] == keys) & (np.char.str_len(keys) > 0)
        out[hit] = rows[hit]
        return out

    def track_id(self, row: int) -> str:
        return self.ids[row].decode("ascii")

    def name(self, row: int) -> str:
        return self.names[row] or ""

    def artists_of(self, row: int) -> list[str]:
        text = self.artists[row]
        return text.split(ARTIST_SEP) if text else []

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
        (computed from ``ids`` on access, no column kept)."""
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
    def blended(self) -> bool:
        """Whether songs have artist vectors (the ranking may weigh the artist part)."""
        return self.artist_table is not None and self.cells.combos is not None

    def combo_of(self, rows: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The combination-table rows of ``rows`` (blended index only)."""
        assert self.cells.combos is not None
        return self.cells.combos[self.cells.where[rows]]

    def a_of(self, rows: np.ndarray | Sequence[int] | int) -> np.ndarray:
        """The artist vectors of ``rows`` (their own ``z`` when the index is not blended)."""
        if not self.blended:
            return self.z_of(rows)
        assert self.artist_table is not None
        return self.artist_table.vectors[self.combo_of(rows)]

    def vectors_of(self, rows: np.ndarray | Sequence[int]) -> np.ndarray:
        """Search vectors of ``rows`` (rows x dims): ``[z, a]`` when blended, else ``z``."""
        rows = np.asarray(rows, dtype=np.int64)
        z = self.z_of(rows)
        return np.hstack([z, self.a_of(rows)]) if self.blended else z

    def search_queries(self, queries: np.ndarray) -> np.ndarray:
        """``queries`` as search vectors: a standardized vector with no artist (a features
        seed) gets ``a = z``, what a one-song artist's profile is."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float64))
        if self.blended and queries.shape[1] == N_FEATURES:
            return np.hstack([queries, queries])
        return queries

    def dim_weights(self, artist_weight: float | None = None) -> np.ndarray:
        """Per search dimension, its weight: ``weights``, then ``artist_weight`` (default:
        the index's) for each artist dimension when blended."""
        if not self.blended:
            return self.weights
        w = self.artist_weight if artist_weight is None else float(artist_weight)
        if w < 0:
            raise ValueError(f"artist_weight {w:g} must be >= 0")
        return np.concatenate([self.weights, np.full(N_ARTIST, w)])

    @cached_property
    def typical_distances(self) -> tuple[float, float]:
        """Median audio L1 and artist-profile L1 between random pairs of songs (a fixed
        sample), the yardsticks of :func:`emergify_contracts.similarity.explain_closeness`."""
        if len(self) < 2:
            return 1.0, 1.0
        rng = np.random.default_rng(7)
        rows = np.sort(rng.choice(len(self), size=min(len(self), 4_000), replace=False))
        return typical_distances(self.z_of(rows), self.a_of(rows))

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
        return int(self.model.nearest_centroid(self.model.project(z.reshape(1, -1)))[0])

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
        profiles = 0 if self.artist_table is None else self.artist_table.nbytes
        return (
            sum(a.nbytes for a in arrays)
            + sum(c.nbytes for c in columns)
            + self.cells.nbytes
            + profiles
        )


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
