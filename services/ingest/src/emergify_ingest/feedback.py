"""Listener feedback in: into the master dataset, then onto the feedback topic.

Like songs, an event is answered 202 only once it is in the master dataset (one Parquet file
per request, written under a temporary name and renamed) and acknowledged by the broker; the
topic is keyed by listener so one partition keeps each listener's events in order.
"""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from emergify_contracts import lake
from emergify_contracts.listener import FeedbackEvent
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
        final = folder / lake.file_name(event.event_id, 0)
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


async def accept_feedback(
    event: FeedbackEvent, feedback_lake: FeedbackLake, publisher: SongPublisher, topic: str
) -> None:
    """Keep ``event`` in the master dataset, then publish it; raises BrokerUnavailable."""
    await asyncio.to_thread(feedback_lake.write, event)
    record = (event.listener_id.encode(), event.model_dump_json().encode())
    await publisher.publish([record], topic=topic)
