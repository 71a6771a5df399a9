"""Building a :class:`~emergify_recommender.index.SongIndex`: from scratch (a full load,
streamed chunk by chunk) or incrementally from the previous one (the speed layer's songs).

A full load turns each chunk of records into packed columns at once, so no more than a
chunk of per-song Python objects ever lives (they would otherwise pin the allocator's
arenas long after they are freed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from itertools import islice

import numpy as np

from emergify_contracts.artist_profiles import ArtistProfiles, artist_keys
from emergify_recommender.artist_vectors import (
    N_ARTIST,
    ArtistVectors,
    Similarity,
    artist_vectors,
)
from emergify_recommender.cells import build_cells, updated_cells, widened_cells
from emergify_recommender.columns import CodeBook, HashListColumn, TextColumn, hash64, hash_key
from emergify_recommender.index import ARTIST_SEP, ID_LEN, N_FEATURES, SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.records import SongRecord
from emergify_recommender.text_keys import normalize_text, normalize_title

_CHUNK = 1_000  # records turned into columns at a time: few per-song objects live at once


def _readonly(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


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
    credits: list[tuple[str, ...]]  # artist keys (docs/similarity.md)


#: A credit list's artist keys, by (artists, artist_ids): lists repeat across songs.
CreditCache = dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]]


def _credit_keys(r: SongRecord, cache: CreditCache) -> tuple[str, ...]:
    credit = (tuple(r.artists), tuple(r.artist_ids or ()))
    keys = cache.get(credit)
    if keys is None:
        keys = cache[credit] = artist_keys(*credit)
    return keys


def _part(
    records: Sequence[SongRecord], cache: CreditCache | None = None, credits: bool = True
) -> _Part:
    """The columns of ``records``; their artist keys only with ``credits`` (an index without
    artist profiles never uses them, and they cost memory while it is built)."""
    n = len(records)
    cache = {} if cache is None else cache
    dedup, artist_hashes, search_text = [], [], []
    for r in records:
        artists = [normalize_text(a) for a in r.artists]
        dedup.append(hash_key([normalize_title(r.name), *sorted(artists)]))
        # Unique per song: "A feat. A" must not count twice against max_per_artist.
        artist_hashes.append([hash64(a) for a in dict.fromkeys(artists)])
        search_text.append(normalize_text(r.name) + "\n" + " · ".join(artists))
    return _Part(
        ids=np.array([r.track_id.encode("ascii") for r in records], dtype=f"S{ID_LEN}"),
        names=[r.name for r in records],
        artists=[ARTIST_SEP.join(r.artists) for r in records],
        albums=[r.album for r in records],
        raw=np.array([r.features for r in records], dtype=np.float64).reshape(n, N_FEATURES),
        popularity=_small_ints([-1 if r.popularity is None else r.popularity for r in records]),
        table_versions=_small_ints([r.table_version for r in records]),
        dedup_hashes=np.array(dedup, dtype=np.uint64),
        artist_hashes=artist_hashes,
        search_text=search_text,
        last_update=_max_updated(records),
        credits=[_credit_keys(r, cache) for r in records] if credits else [],
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
    credits: list[tuple[str, ...]]

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
            credits=part.credits,
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
    return model.nearest_centroid(model.project(z)).astype(dtype)


def _chunks(records: Iterable[SongRecord]) -> Iterator[list[SongRecord]]:
    it = iter(records)
    while chunk := list(islice(it, _CHUNK)):
        yield chunk


def _split_weights(artist_weight: float) -> np.ndarray:
    # Cells are cut in the space the default request searches, so their boxes are tight in
    # the artist dimensions too (docs/similarity.md, "Recommender").
    return np.concatenate([np.ones(N_FEATURES), np.full(N_ARTIST, artist_weight)])


def build_index(
    records: Iterable[SongRecord],
    model: LoadedModel | None,
    *,
    watermark: int | None = None,
    last_batch_at: datetime | None = None,
    leaf: int | None = None,
    profiles: ArtistProfiles | None = None,
    similarity: Similarity | None = None,
) -> SongIndex:
    """Build an index from scratch. Clusters are recomputed from ``model`` (the table's
    ``cluster`` column may be from an older model). ``records`` may be a stream: it is
    turned into columns chunk by chunk. When an id repeats, its highest ``table_version``
    (the last of equals) wins.

    With a model, its artist ``profiles`` and the ``similarity`` setting, the index is
    blended: every song gets its artist vector's combination row, and the ranking weighs
    the artist part by ``similarity.artist_weight`` unless a request says otherwise."""
    # Albums repeat (an album's tracks), so only distinct ones are kept; artist credits are
    # kept per song: a dictionary of them would pin more allocator arenas than it saves.
    album_book = CodeBook()
    cache: CreditCache = {}
    blended = model is not None and profiles is not None and similarity is not None
    parts = [
        _Packed.of(_part(chunk, cache, credits=blended), album_book) for chunk in _chunks(records)
    ] or [_Packed.of(_part([]), album_book)]
    del cache
    credits = [c for p in parts for c in p.credits]
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
        credits = [credits[r] for r in rows] if credits else credits
    if model is None:
        means, scales = _catalog_standardization(raw)
    else:
        means, scales = model.means, model.scales
    z = (raw - means) / scales
    clusters = _clusters(z, model)
    table: ArtistVectors | None = None
    weight = 0.0
    if blended:
        assert model is not None and profiles is not None and similarity is not None
        table, combos = artist_vectors(
            profiles, similarity.multi_artist_rule, model.version
        ).assign(credits, z)
        weight = similarity.artist_weight
        vectors = np.hstack([z, table.vectors[combos]])
        del z
        cells = build_cells(raw, vectors, popularity, leaf, combos, _split_weights(weight))
        del vectors, combos
    else:
        cells = build_cells(raw, z, popularity, leaf)
        del z
    del raw, credits
    return SongIndex(
        ids=_readonly(ids),
        id_order=_readonly(np.argsort(ids, kind="stable").astype(np.intp)),
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
        artist_table=table,
        artist_weight=weight,
        similarity=similarity if model is not None else None,
    )


def remodeled(
    index: SongIndex,
    model: LoadedModel,
    *,
    profiles: ArtistProfiles | None = None,
    similarity: Similarity | None = None,
) -> SongIndex | None:
    """``index`` under another model (a newly published version), its songs' columns kept:
    only what the model changes is computed again from the stored features — standardized
    vectors, clusters, the artist table (same credits, the new profiles) and the search
    cells — with no per-song text work and no read of the feature table. The rows keep their
    order (ties in distance break by row, as in any incrementally grown index).

    None when ``index`` cannot give what the model needs: no model before (the catalog's
    own standardization, no artist credits kept) or profiles for an index that kept no
    artist credits (audio-only); a full build then."""
    blended = profiles is not None and similarity is not None
    if index.model is None or (blended and not index.blended):
        return None
    rows = np.arange(len(index))
    raw = index.raw_of(rows)
    z = (raw - model.means) / model.scales
    clusters = _clusters(z, model)
    table: ArtistVectors | None = None
    weight = 0.0
    if blended:
        assert profiles is not None and similarity is not None and index.artist_table is not None
        combos = index.artist_table.combos  # each combination's artist keys, credit order
        credits = [combos[c] for c in index.combo_of(rows).tolist()]
        table, new_combos = artist_vectors(
            profiles, similarity.multi_artist_rule, model.version
        ).assign(credits, z)
        del credits
        weight = similarity.artist_weight
        vectors = np.hstack([z, table.vectors[new_combos]])
        del z
        cells = build_cells(
            raw, vectors, index.popularity, None, new_combos, _split_weights(weight)
        )
        del vectors, new_combos
    else:
        cells = build_cells(raw, z, index.popularity)
        del z
    del raw
    return replace(
        index,
        clusters=_readonly(clusters),
        cells=cells,
        means=_readonly(np.array(model.means, dtype=np.float64)),
        scales=_readonly(np.array(model.scales, dtype=np.float64)),
        model=model,
        artist_table=table,
        artist_weight=weight,
        similarity=similarity,
        loaded_at=datetime.now(UTC),
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
    known = index.positions(list(latest)).tolist()
    changed: list[SongRecord] = []
    at: list[int] = []
    for r, pos in zip(latest.values(), known, strict=True):
        if pos < 0 or not _same(index, pos, r):
            changed.append(r)
            at.append(pos)
    if not changed:
        return replace(index, watermark=new_watermark, last_batch_at=new_last_batch)

    n_old = len(index)
    touched: list[int] = []
    next_row = n_old
    for pos in at:
        if pos < 0:
            pos, next_row = next_row, next_row + 1
        touched.append(pos)
    rows = np.array(touched, dtype=np.int64)
    part = _part(changed, credits=index.artist_table is not None)
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
        id_order = np.insert(index.id_order.astype(np.intp, copy=False), at, new_rows[by_id])
    else:
        id_order = index.id_order
    model = index.model
    table = index.artist_table
    if model is None:
        raw = grown(index.raw, part.raw)
        means, scales = _catalog_standardization(raw)
        z = (raw - means) / scales
        clusters = _clusters(z, None)
        cells = build_cells(raw, z, grown(index.popularity, part.popularity))
        del z, raw
    else:
        means, scales = index.means, index.scales
        z_part = (part.raw - means) / scales
        clusters_part = _clusters(z_part, model)
        clusters = grown(index.clusters, clusters_part)
        vectors, combos = z_part, None
        if index.blended:
            assert table is not None
            table, combos = table.assign(part.credits, z_part)
            vectors = np.hstack([z_part, table.vectors[combos]])
        cells = updated_cells(
            index.cells,
            rows[~appended],
            part.raw[~appended],
            vectors[~appended],
            part.popularity[~appended],
            rows[appended],
            part.raw[appended],
            vectors[appended],
            part.popularity[appended],
            None if combos is None else combos[~appended],
            None if combos is None else combos[appended],
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
        weights=index.weights,
        artist_table=table,
        artist_weight=index.artist_weight,
        similarity=index.similarity,
    )


def with_profiles(index: SongIndex, changed: ArtistProfiles) -> SongIndex:
    """A new index with the artist profiles of ``changed.keys`` replaced (new artists
    added): every combination crediting one of them is recomputed and the cells of its
    songs widened to cover their new vectors. A no-op when the index is not blended."""
    table = index.artist_table
    if not index.blended or table is None or not changed.keys:
        return index
    table, affected = table.with_profiles(changed)
    cells = index.cells
    if affected.size:
        assert cells.combos is not None
        positions = np.flatnonzero(np.isin(cells.combos, affected))
        rows = cells.perm[positions].astype(np.int64)
        vectors = np.hstack([index.z_of(rows), table.vectors[cells.combos[positions]]])
        cells = widened_cells(cells, rows, vectors)
    return replace(index, artist_table=table, cells=cells)
