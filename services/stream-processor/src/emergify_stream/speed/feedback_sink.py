"""The speed layer's second sink: listener feedback events into the listener tables.

Exactly once, like songs (:mod:`emergify_stream.speed.feature_table`): the rows of a micro-batch
and its ``(query_name, batch_id)`` marker commit in one transaction, and a batch whose marker
exists writes nothing. Within a batch, events apply in Kafka order; the topic is keyed by
listener, so each listener's events arrive in the order they were accepted and an ``erase``
removes exactly what came before it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from emergify_contracts.listener import (
    FeedbackSignal,
    listener_batches,
    listener_feedback,
    listener_history,
)

#: ``kafka_partition`` of a row restored from the master dataset, not read from Kafka.
LAKE_PARTITION = -1
#: Ids per IN (...) list: far below every database's bound-parameter limit.
_CHUNK = 1000

#: Columns of a feedback micro-batch frame, in Kafka order within each partition.
FEEDBACK_COLUMNS: tuple[str, ...] = (
    "event_id",
    "listener_id",
    "track_id",
    "signal",
    "at",
    "kafka_partition",
    "kafka_offset",
)


@dataclass(frozen=True)
class FeedbackBatchResult:
    """What one feedback micro-batch did."""

    applied: bool  # False when it had committed before (a replay)
    version: int  # the listener tables' version after it
    listener_ids: tuple[str, ...]  # listeners whose state changed (sorted)


def _insert_ignoring_duplicates(dialect: str) -> sa.Insert:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(listener_feedback).on_conflict_do_nothing(
        index_elements=[listener_feedback.c.listener_id, listener_feedback.c.event_id]
    )


def listener_version(conn: Connection) -> int:
    """The listener tables' version: the highest committed feedback batch's (0 when none)."""
    return conn.execute(sa.select(sa.func.max(listener_batches.c.version))).scalar() or 0


def _ordered(events: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    # Kafka order per partition; partitions are independent (a listener lives in one).
    return sorted(events, key=lambda e: (int(e["kafka_partition"]), int(e["kafka_offset"])))


def _utc(value: Any) -> datetime:
    if hasattr(value, "to_pydatetime"):  # a pandas Timestamp
        value = value.to_pydatetime()
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


class FeedbackSink:
    """Applies feedback micro-batches to ``listener_feedback``, once each."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = _insert_ignoring_duplicates(engine.dialect.name)

    def write(
        self, query_name: str, batch_id: int, events: Iterable[Mapping[str, Any]]
    ) -> FeedbackBatchResult:
        """Apply one micro-batch of feedback events (:data:`FEEDBACK_COLUMNS`)."""
        with self.engine.begin() as conn:
            marker = conn.execute(
                sa.select(listener_batches.c.version).where(
                    listener_batches.c.query_name == query_name,
                    listener_batches.c.batch_id == batch_id,
                )
            ).scalar()
            if marker is not None:
                return FeedbackBatchResult(False, listener_version(conn), ())
            pending: dict[str, list[dict[str, Any]]] = {}
            erased: set[str] = set()
            for event in _ordered(events):
                listener = str(event["listener_id"])
                if event["signal"] == FeedbackSignal.ERASE.value:
                    pending[listener] = []  # what the batch held before the erase goes too
                    erased.add(listener)
                    continue
                pending.setdefault(listener, []).append(
                    {
                        "listener_id": listener,
                        "event_id": str(event["event_id"]),
                        "track_id": str(event["track_id"]),
                        "signal": str(event["signal"]),
                        "at": _utc(event["at"]),
                        "kafka_partition": int(event["kafka_partition"]),
                        "kafka_offset": int(event["kafka_offset"]),
                    }
                )
            version = listener_version(conn) + 1
            if erased:
                for table in (listener_feedback, listener_history):
                    conn.execute(sa.delete(table).where(table.c.listener_id.in_(sorted(erased))))
            rows = [
                {**row, "table_version": version} for batch in pending.values() for row in batch
            ]
            if rows:
                conn.execute(self._insert, rows)
            conn.execute(
                sa.insert(listener_batches).values(
                    query_name=query_name,
                    batch_id=batch_id,
                    version=version,
                    rows=len(rows),
                    committed_at=datetime.now(UTC),
                )
            )
            return FeedbackBatchResult(True, version, tuple(sorted(pending.keys() | erased)))

    def reconcile(
        self, query_name: str, events: Iterable[Mapping[str, Any]]
    ) -> FeedbackBatchResult:
        """Bring the listener tables up to every event of the master dataset (``event_id,
        listener_id, track_id, signal, at``), for when the broker lost records.

        Per listener, in ``at`` order (the ingest stamps it on acceptance, and the topic keeps
        that order): an erasure the tables never applied deletes what it erased (feedback
        and history up to its time; nothing when it was applied), and only events after the
        last erasure are restored, so an erased event never comes back. Events the tables
        hold are not written again. One transaction with a ``(query_name, 0)`` marker; when
        nothing was missing, nothing is written and ``applied`` is False.
        """
        by_listener: dict[str, list[Mapping[str, Any]]] = {}
        for event in sorted(events, key=lambda e: (_utc(e["at"]), str(e["event_id"]))):
            by_listener.setdefault(str(event["listener_id"]), []).append(event)
        with self.engine.begin() as conn:
            changed: set[str] = set()
            wanted: list[dict[str, Any]] = []
            for listener, stream in by_listener.items():
                erasures = [i for i, e in enumerate(stream) if e["signal"] == "erase"]
                if erasures:
                    cut = _utc(stream[erasures[-1]]["at"])
                    deleted = 0
                    for table, column in (
                        (listener_feedback, listener_feedback.c.at),
                        (listener_history, listener_history.c.recommended_at),
                    ):
                        deleted += conn.execute(
                            sa.delete(table).where(table.c.listener_id == listener, column <= cut)
                        ).rowcount
                    if deleted:
                        changed.add(listener)
                    stream = stream[erasures[-1] + 1 :]
                wanted.extend(
                    {
                        "listener_id": listener,
                        "event_id": str(e["event_id"]),
                        "track_id": str(e["track_id"]),
                        "signal": str(e["signal"]),
                        "at": _utc(e["at"]),
                        "kafka_partition": LAKE_PARTITION,
                        "kafka_offset": None,
                    }
                    for e in stream
                )
            held: set[tuple[str, str]] = set()
            listeners = sorted({row["listener_id"] for row in wanted})
            for lo in range(0, len(listeners), _CHUNK):
                held.update(
                    (r.listener_id, r.event_id)
                    for r in conn.execute(
                        sa.select(
                            listener_feedback.c.listener_id, listener_feedback.c.event_id
                        ).where(listener_feedback.c.listener_id.in_(listeners[lo : lo + _CHUNK]))
                    )
                )
            missing = [r for r in wanted if (r["listener_id"], r["event_id"]) not in held]
            if not missing and not changed:
                return FeedbackBatchResult(False, listener_version(conn), ())
            version = listener_version(conn) + 1
            if missing:
                conn.execute(self._insert, [{**r, "table_version": version} for r in missing])
            conn.execute(
                sa.insert(listener_batches).values(
                    query_name=query_name,
                    batch_id=0,
                    version=version,
                    rows=len(missing),
                    committed_at=datetime.now(UTC),
                )
            )
            listeners_changed = changed | {r["listener_id"] for r in missing}
            return FeedbackBatchResult(True, version, tuple(sorted(listeners_changed)))
