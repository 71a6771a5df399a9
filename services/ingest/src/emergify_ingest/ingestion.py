"""One upload end to end: validate, append to the master dataset, publish, report.

For each chunk of accepted songs: (1) append it to the master dataset, durably, then
(2) hand it to the songs topic's producer. The answer (202) goes out only after every chunk
is in the master dataset and the broker acknowledged every record; acknowledgements are
collected as they come, so chunks keep flowing while earlier ones are in flight. Parsing,
validation, Parquet writing and JSON serialisation run in a worker thread so the event loop
keeps serving /health and the Kafka client; while the producer sends chunk ``n`` the thread
already prepares chunk ``n + 1``, and a second thread validates chunk ``n + 2``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

import pyarrow as pa
import pyarrow.compute as pc
import structlog
from anyio import to_thread

from emergify_contracts.events import SongEvent
from emergify_contracts.problems import ProblemError
from emergify_ingest.config import Settings
from emergify_ingest.csv_arrow import ArrowUpload, arrow_chunks, read_upload
from emergify_ingest.csv_columns import ColumnChunk, column_chunks, event_values
from emergify_ingest.feedback import FeedbackLake
from emergify_ingest.master_dataset import MasterDataset
from emergify_ingest.publisher import (
    Acks,
    BrokerUnavailable,
    PreparedRecords,
    Record,
    SongPublisher,
)
from emergify_ingest.upload import (
    SongChunk,
    UploadLedger,
    UploadReport,
    accepted_chunks,
    csv_candidates,
    inspect_csv,
    json_candidates,
    parse_json_songs,
)

log = structlog.get_logger()


_Chunk = SongChunk | ColumnChunk


@dataclass
class _SavedChunk:
    songs: int
    records: Sequence[Record] | PreparedRecords


_END = object()


class _Prefetched:
    """The items of ``chunks``, produced in a thread of their own at most ``ahead`` items in
    advance of :meth:`next`; an exception the generator raises comes out of :meth:`next`
    in order. :meth:`close` stops the thread (an upload that failed half-way)."""

    def __init__(self, chunks: Iterator[_Chunk], ahead: int = 1) -> None:
        self._queue: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(
            target=self._produce, args=(chunks,), name="emergify-validate", daemon=True
        )
        self._thread.start()

    def _produce(self, chunks: Iterator[_Chunk]) -> None:
        try:
            for chunk in chunks:
                if not self._put((True, chunk)):
                    return
            self._put((True, _END))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put((False, exc))

    def _put(self, item: tuple[bool, object]) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> _Chunk | None:
        """The next chunk, None after the last (blocking: call it from a worker thread)."""
        if self._done:
            return None
        ok, value = self._queue.get()
        if not ok:
            self._done = True
            raise value  # type: ignore[misc]
        if value is _END:
            self._done = True
            return None
        return value  # type: ignore[return-value]

    def close(self) -> None:
        """Stop producing and wait for the thread (blocking)."""
        self._stop.set()
        self._thread.join()


class Ingestor:
    """Runs uploads through the master dataset and the songs topic."""

    def __init__(
        self, settings: Settings, dataset: MasterDataset, publisher: SongPublisher
    ) -> None:
        self.settings = settings
        self.dataset = dataset
        self.publisher = publisher
        self.feedback_lake = FeedbackLake(settings.lake_uri)

    async def ingest_csv(self, file: BinaryIO) -> UploadReport:
        """Ingest an uploaded CSV file (any known layout) read from ``file``."""
        ledger = UploadLedger(self.settings.max_reported_rejections)
        chunks: Iterator[SongChunk | ColumnChunk]
        if self.settings.csv_validation == "arrow":
            upload = await to_thread.run_sync(self._read_arrow, file)
            if upload is not None:
                layout = upload.plan.layout.value
                return await self._run(
                    arrow_chunks(upload, ledger, self.settings.chunk_rows),
                    ledger,
                    layout=layout,
                    source=f"csv:{layout}",
                    warnings=[],
                )
        plan = await to_thread.run_sync(inspect_csv, file, self.settings.max_rows)
        if self.settings.csv_validation in ("arrow", "columns"):
            chunks = column_chunks(file, plan, ledger, self.settings.chunk_rows)
        else:
            chunks = accepted_chunks(csv_candidates(file, plan), ledger, self.settings.chunk_rows)
        return await self._run(
            chunks,
            ledger,
            layout=plan.layout.value,
            source=f"csv:{plan.layout.value}",
            warnings=list(plan.warnings),
        )

    def _read_arrow(self, file: BinaryIO) -> ArrowUpload | None:
        """The upload read by pyarrow, or None when the ``csv`` reader must read it."""
        file.seek(0)
        data = file.read()
        return read_upload(data, self.settings.max_rows, self.settings.max_field_bytes)

    async def ingest_json(self, body: bytes) -> UploadReport:
        """Ingest a JSON body holding one song object or a list of them."""
        items = await to_thread.run_sync(parse_json_songs, body, self.settings.max_rows)
        ledger = UploadLedger(self.settings.max_reported_rejections)
        chunks = accepted_chunks(json_candidates(items), ledger, self.settings.chunk_rows)
        return await self._run(chunks, ledger, layout="json", source="json", warnings=[])

    async def _run(
        self,
        chunks: Iterator[SongChunk] | Iterator[_Chunk],
        ledger: UploadLedger,
        *,
        layout: str,
        source: str,
        warnings: list[str],
    ) -> UploadReport:
        upload_id = uuid.uuid4().hex
        started = time.perf_counter()
        clock = _ChunkClock()
        saved = published = 0

        # Validation (the chunk generator) runs a chunk ahead in a thread of its own, so it
        # overlaps the previous chunk's Parquet write and event framing (Arrow kernels,
        # Parquet and lz4 release the GIL): two cores for one upload.
        ahead = _Prefetched(chunks)

        def save_next() -> _SavedChunk | None:
            chunk = ahead.next()
            if chunk is None:
                return None
            return self._save(chunk, upload_id=upload_id, source=source, ingested_at=clock.next())

        unacked: deque[tuple[int, Acks]] = deque()

        async def settle(wait_all: bool) -> None:
            # Acks arrive in order per partition; count what the broker confirmed so far.
            nonlocal published
            while unacked and (wait_all or unacked[0][1].done):
                songs, acks = unacked[0]
                await acks.wait()
                unacked.popleft()
                published += songs

        pending = asyncio.ensure_future(to_thread.run_sync(save_next))
        try:
            while (current := await pending) is not None:
                saved += current.songs
                # Prepare the next chunk while the broker takes this one. Its acks are
                # collected later: the producer keeps a batch per partition in flight.
                pending = asyncio.ensure_future(to_thread.run_sync(save_next))
                try:
                    unacked.append((current.songs, await self.publisher.enqueue(current.records)))
                    await settle(wait_all=False)
                except BrokerUnavailable as exc:
                    # The thread may be writing the next chunk; let it finish so the count is true.
                    with contextlib.suppress(ProblemError):
                        if (extra := await pending) is not None:
                            saved += extra.songs
                    raise self._broker_problem(exc, upload_id, saved, published) from exc
            try:
                # The 202 only once the broker acknowledged every record.
                await settle(wait_all=True)
            except BrokerUnavailable as exc:
                raise self._broker_problem(exc, upload_id, saved, published) from exc
        finally:
            if not pending.done():
                await asyncio.wait([pending])
            if not pending.cancelled():
                pending.exception()  # retrieved here, so asyncio does not log it as lost
            await to_thread.run_sync(ahead.close)

        log.info(
            "upload ingested",
            upload_id=upload_id,
            layout=layout,
            accepted=ledger.accepted,
            rejected=ledger.rejected_count,
            seconds=round(time.perf_counter() - started, 3),
        )
        if ledger.accepted == 0:
            raise ProblemError(
                422,
                f"none of the {ledger.rejected_count} records is a valid song; the reasons are "
                "listed per row in 'rejected'",
                title="No valid songs",
                layout=layout,
                rejected=[r.model_dump() for r in ledger.rejected],
                rejected_count=ledger.rejected_count,
            )
        return UploadReport(
            upload_id=upload_id,
            layout=layout,
            accepted=ledger.accepted,
            rejected=ledger.rejected,
            rejected_count=ledger.rejected_count,
            warnings=[*warnings, *ledger.warnings()],
        )

    def _save(
        self,
        chunk: SongChunk | ColumnChunk,
        *,
        upload_id: str,
        source: str,
        ingested_at: datetime,
    ) -> _SavedChunk:
        """Append ``chunk`` to the master dataset and serialise its events (worker thread)."""
        try:
            if isinstance(chunk, ColumnChunk):
                self.dataset.append_table(
                    chunk.table,
                    upload_id=upload_id,
                    chunk=chunk.index,
                    source=source,
                    ingested_at=ingested_at,
                )
            else:
                self.dataset.append(
                    chunk.songs,
                    chunk.rows,
                    upload_id=upload_id,
                    chunk=chunk.index,
                    source=source,
                    ingested_at=ingested_at,
                )
        except OSError as exc:
            log.error("master dataset write failed", upload_id=upload_id, error=repr(exc))
            raise ProblemError(
                503,
                f"could not write to the master dataset ({exc.strerror or exc}); earlier chunks "
                "of this upload, if any, are saved; retry the upload once storage is fixed",
                title="Master dataset unavailable",
                headers={"Retry-After": str(self.settings.retry_after_s)},
                upload_id=upload_id,
            ) from exc
        if isinstance(chunk, ColumnChunk):
            values = event_values(
                chunk.table,
                upload_id=upload_id,
                source=source,
                ingested_at=ingested_at,
                songs=chunk.songs,
            )
            keys = pc.cast(chunk.table.column("track_id").combine_chunks(), pa.binary())
            return _SavedChunk(len(chunk), self.publisher.prepare_columns(keys, values))
        records = [
            (
                song.track_id.encode(),
                SongEvent(upload_id=upload_id, source=source, ingested_at=ingested_at, song=song)
                .model_dump_json()
                .encode(),
            )
            for song in chunk.songs
        ]
        return _SavedChunk(len(chunk.songs), self.publisher.prepare(records))

    def _broker_problem(
        self, exc: BrokerUnavailable, upload_id: str, saved: int, published: int
    ) -> ProblemError:
        log.warning(
            "publish failed", upload_id=upload_id, saved=saved, published=published, error=str(exc)
        )
        return ProblemError(
            503,
            f"{exc}. {saved} songs of this upload are safe in the master dataset (upload "
            f"{upload_id}) and reach the catalog at the next batch run; {published} were "
            "published. Retry the upload after Retry-After seconds to make them available "
            "sooner — re-sending songs is harmless, the latest version of a track wins.",
            title="Kafka unavailable",
            headers={"Retry-After": str(self.settings.retry_after_s)},
            upload_id=upload_id,
            saved=saved,
            published=published,
        )


class _ChunkClock:
    """``ingested_at`` per chunk, never going backwards within an upload."""

    def __init__(self) -> None:
        self._last: datetime | None = None

    def next(self) -> datetime:
        now = datetime.now(UTC)
        # A clock step backwards must not make a later chunk look older; rows break ties.
        if self._last is not None and now < self._last:
            now = self._last
        self._last = now
        return now
