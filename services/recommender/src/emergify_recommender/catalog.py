"""The live catalog: the current :class:`SongIndex` and every way it is refreshed.

Three paths lead to a new index, all serialized by one lock and run off the event loop
(DB reads and NumPy work happen in a worker thread, so requests keep being served):

- a ``CatalogChange`` event: the upserted ids are read back and applied incrementally;
- a ``ModelPublished`` event: model and full table are reloaded (every cluster changes);
- the fallback poll: compares the database's newest table and model versions with what is
  loaded, and catches up (incrementally when only songs changed). It is what keeps the
  catalog fresh when Kafka is down or an event was lost.

The index is swapped by assigning one attribute; readers take ``catalog.index`` once per
request and keep that reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog
from sqlalchemy.engine import Engine

from emergify_contracts.events import CatalogChange, ModelPublished
from emergify_recommender import ranking, snapshot
from emergify_recommender.artist_vectors import DEFAULT_SIMILARITY, Similarity
from emergify_recommender.build import build_index, remodeled, with_profiles, with_songs
from emergify_recommender.feature_table import (
    TableState,
    load_all,
    load_ids,
    load_profiles,
    load_since,
    load_version,
    table_state,
)
from emergify_recommender.index import SongIndex
from emergify_recommender.model_registry import load_current_model
from emergify_recommender.snapshot import SnapshotInvalid, Snapshots

log = structlog.get_logger()


def release_freed_memory() -> None:
    """Give the heap pages a full load freed back to the OS. glibc keeps freed memory
    mapped, so without this a recommender holding 1M songs sits at ~520 MB RSS after a
    load instead of ~290 MB (bench/recommender_memory.py). A no-op without glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class CatalogNotReady(RuntimeError):
    """The first load of the catalog has not finished (or the database is unreachable)."""


class Catalog:
    """Holds the current index; refreshes it from the database."""

    def __init__(
        self,
        engine: Engine,
        similarity: Similarity | None = None,
        snapshot_path: Path | None = None,
    ) -> None:
        self._engine = engine
        #: The similarity setting for a model that stored none (the settings' defaults).
        self._similarity = similarity or DEFAULT_SIMILARITY
        self._index: SongIndex | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None
        #: Where the index is saved for the next start (:mod:`emergify_recommender.snapshot`).
        self.snapshots = Snapshots(snapshot_path, engine.url.render_as_string(hide_password=True))
        self._snapshot_task: asyncio.Task[bool] | None = None
        #: How the last start loaded the catalog: "snapshot" or "full build".
        self.started_from: str | None = None

    @property
    def engine(self) -> Engine:
        """The database the catalog reads (the song detail reads extra columns from it)."""
        return self._engine

    @property
    def index(self) -> SongIndex | None:
        """The current index, or None before the first successful load."""
        return self._index

    def require(self) -> SongIndex:
        """The current index; raises :class:`CatalogNotReady` before the first load."""
        index = self._index
        if index is None:
            raise CatalogNotReady(self.last_error or "the catalog is still loading")
        return index

    async def _swap(self, reason: str, build: Callable[[SongIndex | None], SongIndex]) -> SongIndex:
        async with self._lock:
            started = time.perf_counter()
            try:
                new = await asyncio.to_thread(build, self._index)
            except Exception as exc:
                self.last_error = f"catalog refresh failed: {type(exc).__name__}: {exc}"
                raise
            try:  # compiled for this index's array types before any request uses it
                await asyncio.to_thread(ranking.warm, new)
            except Exception as exc:  # never a reason to keep the old index
                log.warning("ranking warm-up failed", error=f"{type(exc).__name__}: {exc}")
            self.last_error = None
            old, self._index = self._index, new
            self._snapshot_if_due(new)
            if old is None or new.ids is not old.ids or new.model is not old.model:
                log.info(
                    "catalog refreshed",
                    reason=reason,
                    songs=len(new),
                    model_version=new.model_version,
                    table_version=new.table_version,
                    seconds=round(time.perf_counter() - started, 3),
                )
            return new

    def _snapshot_if_due(self, index: SongIndex) -> None:
        """Save ``index`` for the next start in a worker thread, when it is due and no save
        is under way (requests keep being served; the index never changes once built)."""
        running = self._snapshot_task is not None and not self._snapshot_task.done()
        if running or not self.snapshots.due(index):
            return
        self._snapshot_task = asyncio.create_task(
            asyncio.to_thread(self.snapshots.write_if_due, index), name="index-snapshot"
        )

    async def snapshot_written(self) -> bool:
        """Wait for a snapshot save under way, if any; whether it wrote one."""
        task = self._snapshot_task
        return bool(task is not None and await task)

    def _from_snapshot(self) -> SongIndex | None:
        """The saved index, when it is valid for the served model (else None, logged)."""
        path = self.snapshots.path
        if path is None:
            return None
        model = load_current_model(self._engine)
        if model is None:
            return None
        similarity = Similarity.of_model(model.metrics, self._similarity)
        started = time.perf_counter()
        try:
            index, header = snapshot.read(path, model, similarity, self.snapshots.database)
        except FileNotFoundError:
            return None
        except (OSError, SnapshotInvalid) as exc:
            log.info("index snapshot not used", path=str(path), reason=str(exc))
            return None
        self.snapshots.loaded(header)
        log.info(
            "index snapshot read",
            songs=len(index),
            model_version=index.model_version,
            watermark=index.watermark,
            seconds=round(time.perf_counter() - started, 2),
        )
        return index

    def _start(self, current: SongIndex | None) -> SongIndex:
        """The first load: the saved index caught up with the feature table as the poll
        does (songs written after its watermark, profiles changed since), else a full build."""
        saved = self._from_snapshot()
        if saved is None:
            self.started_from = "full build"
            return self._full_load(current)
        self.started_from = "snapshot"
        return self._sync(saved)

    def _full_load(self, _current: SongIndex | None) -> SongIndex:
        state = table_state(self._engine)
        model = load_current_model(self._engine)
        profiles, similarity = None, None
        if model is not None:
            similarity = Similarity.of_model(model.metrics, self._similarity)
            profiles = load_profiles(self._engine, model.version)
        index = build_index(
            load_all(self._engine),
            model,
            last_batch_at=state.last_batch_at,
            profiles=profiles,
            similarity=similarity,
        )
        if index.blended and index.model_version is not None:
            # Micro-batches committed while the songs were read: their profile rows too, so
            # the profiles are never older than the songs.
            since = -1 if state.max_table_version is None else state.max_table_version
            later = load_profiles(self._engine, index.model_version, since_table_version=since)
            if later is not None:
                index = with_profiles(index, later)
        release_freed_memory()  # the load's temporaries are gone by now
        return replace(index, watermark=index.table_version)

    def _new_model(self, current: SongIndex | None) -> SongIndex:
        """The newest model over the songs already loaded (:func:`remodeled`: no per-song
        work, no read of the whole table), then caught up with the table as the poll does;
        a full load when the index cannot be remodeled."""
        if current is None or current.watermark is None:
            return self._full_load(current)
        state = table_state(self._engine)  # before the model: its songs are caught up after
        model = load_current_model(self._engine)
        if model is None or model.version == current.model_version:
            return self._full_load(current)
        similarity = Similarity.of_model(model.metrics, self._similarity)
        profiles = load_profiles(self._engine, model.version)
        index = remodeled(
            current,
            model,
            profiles=profiles,
            similarity=similarity if profiles is not None else None,
        )
        if index is None:
            return self._full_load(current)
        if profiles is None:  # as a full load stores it: the model's setting, audio only
            index = replace(index, similarity=similarity)
        release_freed_memory()  # the temporaries of the remodel (features, vectors) are gone
        return self._catch_up(index, state)

    def _changed_profiles(
        self, current: SongIndex, keys: list[str] | None, since: int | None = None
    ) -> SongIndex:
        """``current`` with the stored profiles of ``keys`` (or those written after table
        version ``since``) of its model version applied."""
        if not current.blended or current.model_version is None:
            return current
        if keys is not None and not keys:
            return current
        changed = load_profiles(
            self._engine, current.model_version, keys=keys, since_table_version=since
        )
        return current if changed is None else with_profiles(current, changed)

    async def reload(self, reason: str = "start") -> SongIndex:
        """Load model and feature table: at ``"start"`` from the saved index when it is
        still valid (then caught up), else (and for any other reason) from scratch."""
        return await self._swap(reason, self._start if reason == "start" else self._full_load)

    async def apply_change(self, change: CatalogChange) -> SongIndex:
        """Apply a committed micro-batch: read its upserted ids back and update in place."""

        def build(current: SongIndex | None) -> SongIndex:
            if current is None:
                return self._full_load(current)
            # Profiles first: the songs' combination rows are then built on them.
            if change.profiles_model_version == current.model_version:
                if change.listed:
                    current = self._changed_profiles(current, list(change.artists_changed))
                else:  # a batch too big to name them: its rows, by table version
                    current = self._changed_profiles(current, None, change.table_version - 1)
            records = (
                load_ids(self._engine, change.upserted_ids)
                if change.listed
                else load_version(self._engine, change.table_version)
            )
            # The watermark is left to the poll: an earlier batch's event may have been lost.
            return with_songs(current, records, last_batch_at=change.committed_at)

        return await self._swap(f"catalog change v{change.table_version}", build)

    async def apply_model(self, event: ModelPublished) -> SongIndex | None:
        """Load a newly published model (and the full table, whose clusters all change)."""
        current = self._index
        if (
            current is not None
            and current.model_version is not None
            and event.version <= current.model_version
        ):
            return current  # a replayed or older event
        return await self._swap(f"model v{event.version} published", self._new_model)

    async def sync(self) -> SongIndex:
        """Compare the database with what is loaded and catch up (the fallback poll)."""
        return await self._swap("poll", self._sync)

    def _sync(self, current: SongIndex | None) -> SongIndex:
        if current is None:  # the first load failed: the start's load again
            return self._start(current)
        state = table_state(self._engine)
        if state.model_version != current.model_version:
            return self._new_model(current)
        return self._catch_up(current, state)

    def _catch_up(self, current: SongIndex, state: TableState) -> SongIndex:
        """``current`` with what the table gained since its watermark (the model is the
        table's)."""
        watermark = -1 if current.watermark is None else current.watermark
        if state.max_table_version is None:
            return self._full_load(current) if len(current) else current
        if state.max_table_version < watermark:
            return self._full_load(current)  # the table was rebuilt from scratch
        if state.max_table_version > watermark:
            current = self._changed_profiles(current, None, since=watermark)
            records = load_since(self._engine, watermark)
            return with_songs(
                current,
                records,
                watermark=max((r.table_version for r in records), default=watermark),
                last_batch_at=state.last_batch_at,
            )
        if state.songs != len(current):
            return self._full_load(current)  # rows were deleted
        if state.last_batch_at is not None and state.last_batch_at != current.last_batch_at:
            return replace(current, last_batch_at=state.last_batch_at)
        return current

    async def poll_forever(self, interval: float) -> None:
        """Run :meth:`sync` every ``interval`` seconds until cancelled; never raises."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("catalog poll failed", error=f"{type(exc).__name__}: {exc}")
