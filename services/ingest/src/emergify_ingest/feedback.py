"""Listener feedback in: into the master dataset, then onto the feedback topic.

Like songs, an event is answered 202 only once it is in the master dataset (one Parquet file
per request, written under a temporary name and renamed) and acknowledged by the broker; the
topic is keyed by listener so one partition keeps each listener's events in order.

An erase is accepted the same way and then deletes the listener's earlier feedback files from
the master dataset (the speed layer deletes their rows from the listener tables when the erase
event arrives there); what stays is the erase event's own file: a listener id and a time.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emergify_contracts import lake
from emergify_contracts.listener import FeedbackEvent, FeedbackSignal
from emergify_ingest.publisher import SongPublisher

#: Arrow schema of the feedback part of the master dataset.
FEEDBACK_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("listener_id", pa.string()),
        ("track_id", pa.string()),
        ("signal", pa.string()),
        ("at", pa.timestamp("us", tz="UTC")),
    ]
)


class FeedbackLake:
    """The feedback events of a local master dataset."""

    def __init__(self, lake_uri: str) -> None:
        root = lake.local_path(lake_uri)
        if root is None:
            raise ValueError(f"the ingest service writes a local lake only, not {lake_uri!r}")
        self.root = root / lake.FEEDBACK_DIR

    def write(self, event: FeedbackEvent) -> Path:
        """Append one event durably (fsync before the publishing rename)."""
        folder = self.root / lake.partition_name(datetime.now(UTC))
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / lake.feedback_file_name(event.listener_id, event.event_id)
        tmp = folder / lake.tmp_name(final.name)
        table = pa.Table.from_pylist(
            [
                {
                    "event_id": event.event_id,
                    "listener_id": event.listener_id,
                    "track_id": event.track_id,
                    "signal": event.signal.value,
                    "at": event.at,
                }
            ],
            schema=FEEDBACK_SCHEMA,
        )
        with tmp.open("wb") as f:
            pq.write_table(table, f)
            f.flush()
            os.fsync(f.fileno())
        tmp.rename(final)
        return final

    def erase(self, erase: FeedbackEvent) -> int:
        """Delete the listener's feedback files accepted up to ``erase`` (earlier erases
        included), keeping ``erase``'s own; return how many went. A file accepted after the
        erase (a later ``at``) stays, as its row stays in the listener tables."""
        removed = 0
        for path in lake.listener_feedback_files(self.root, erase.listener_id):
            rows = pq.read_table(path, columns=["event_id", "listener_id", "at"]).to_pylist()
            if all(
                r["listener_id"] == erase.listener_id
                and r["event_id"] != erase.event_id
                and r["at"] <= erase.at
                for r in rows
            ):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


async def accept_feedback(
    event: FeedbackEvent, feedback_lake: FeedbackLake, publisher: SongPublisher, topic: str
) -> None:
    """Keep ``event`` in the master dataset, then publish it; raises BrokerUnavailable."""
    await asyncio.to_thread(feedback_lake.write, event)
    record = (event.listener_id.encode(), event.model_dump_json().encode())
    await publisher.publish([record], topic=topic)
    if event.signal is FeedbackSignal.ERASE:
        # Only once the erase is on the topic: the listener tables will forget them too.
        await asyncio.to_thread(feedback_lake.erase, event)
