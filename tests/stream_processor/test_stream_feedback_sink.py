"""The feedback sink on SQLite and PostgreSQL: once per batch, erase in order, replay-safe."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from emergify_contracts.listener import listener_feedback, listener_history
from emergify_contracts.tables import create_tables, make_engine
from emergify_stream.speed.feedback_sink import FeedbackSink

T0 = datetime(2026, 11, 1, tzinfo=UTC)
A, B = "spotify:alice", "key:k1:bob"
TRACKS = ["0" * 21 + str(i) for i in range(6)]


def event(n: int, listener: str, signal: str, track: int | None, partition: int = 0) -> dict:
    return {
        "event_id": f"{n:032x}",
        "listener_id": listener,
        "track_id": None if track is None else TRACKS[track],
        "signal": signal,
        "at": (T0 + timedelta(minutes=n)).isoformat(),
        "kafka_partition": partition,
        "kafka_offset": n,
    }


def stored(engine: sa.Engine) -> dict[str, list[tuple[str, str]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(listener_feedback).order_by(listener_feedback.c.kafka_offset)
        ).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        out.setdefault(row.listener_id, []).append((row.signal, row.track_id))
    return out


def test_a_batch_applies_once_and_a_replay_writes_nothing(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeedbackSink(engine)
    batch = [event(1, A, "like", 0), event(2, B, "dislike", 1, partition=1)]
    first = sink.write("feedback-q", 0, batch)
    assert first.applied and first.version == 1 and first.listener_ids == (B, A)
    replay = sink.write("feedback-q", 0, batch)
    assert not replay.applied and replay.version == 1
    assert stored(engine) == {A: [("like", TRACKS[0])], B: [("dislike", TRACKS[1])]}


def test_erase_removes_what_came_before_it_and_keeps_what_came_after(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeedbackSink(engine)
    sink.write("feedback-q", 0, [event(1, A, "like", 0), event(2, B, "like", 3, partition=1)])
    with engine.begin() as conn:
        conn.execute(
            sa.insert(listener_history).values(listener_id=A, track_id=TRACKS[5], recommended_at=T0)
        )
    # Out of order in the frame, in order on the partition: dislike, erase, ban.
    result = sink.write(
        "feedback-q",
        1,
        [event(5, A, "ban_artist", 4), event(3, A, "dislike", 1), event(4, A, "erase", None)],
    )
    assert result.version == 2 and result.listener_ids == (A,)
    assert stored(engine) == {A: [("ban_artist", TRACKS[4])], B: [("like", TRACKS[3])]}
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(listener_history)).scalar() == 0


def test_the_same_event_in_two_batches_is_stored_once(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeedbackSink(engine)
    sink.write("feedback-q", 0, [event(1, A, "skip", 2)])
    sink.write("feedback-q", 1, [event(1, A, "skip", 2)])
    assert stored(engine) == {A: [("skip", TRACKS[2])]}


def by_time(engine: sa.Engine) -> dict[str, list[tuple[str, str]]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(listener_feedback).order_by(listener_feedback.c.at)).all()
    out: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        out.setdefault(row.listener_id, []).append((row.signal, row.track_id))
    return out


def lake_event(n: int, listener: str, signal: str, track: int | None) -> dict:
    """An event as the master dataset holds it (Spark hands ``at`` back naive, in UTC)."""
    e = event(n, listener, signal, track)
    return {
        "event_id": e["event_id"],
        "listener_id": listener,
        "track_id": e["track_id"],
        "signal": signal,
        "at": (T0 + timedelta(minutes=n)).replace(tzinfo=None),
    }


def test_reconcile_restores_what_the_tables_lack_and_never_what_was_erased(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeedbackSink(engine)
    # The stream applied two events; the broker then lost A's dislike, A's erasure, A's ban
    # after it and B's dislike.
    sink.write("feedback-q", 0, [event(1, A, "like", 0), event(2, B, "like", 3, partition=1)])
    with engine.begin() as conn:
        conn.execute(
            sa.insert(listener_history),
            [
                {"listener_id": A, "track_id": TRACKS[5], "recommended_at": T0},
                {
                    "listener_id": A,
                    "track_id": TRACKS[2],
                    "recommended_at": T0 + timedelta(hours=1),
                },
            ],
        )
    lake = [
        lake_event(6, B, "dislike", 1),
        lake_event(4, A, "erase", None),
        lake_event(1, A, "like", 0),
        lake_event(5, A, "ban_artist", 4),
        lake_event(3, A, "dislike", 1),
        lake_event(2, B, "like", 3),
    ]
    result = sink.reconcile("reconcile-feedback-1", lake)
    assert result.applied and result.version == 2 and result.listener_ids == (B, A)
    assert by_time(engine) == {
        A: [("ban_artist", TRACKS[4])],
        B: [("like", TRACKS[3]), ("dislike", TRACKS[1])],
    }
    with engine.connect() as conn:  # history up to the erasure is gone, later history stays
        history = conn.execute(sa.select(listener_history.c.track_id)).scalars().all()
    assert history == [TRACKS[2]]

    # Again (the next outage): nothing is missing, nothing is written.
    again = sink.reconcile("reconcile-feedback-2", lake)
    assert not again.applied and again.version == 2 and again.listener_ids == ()
    # The stream delivering a restored event later stores nothing twice.
    sink.write("feedback-q", 1, [event(6, B, "dislike", 1, partition=1)])
    assert by_time(engine)[B] == [("like", TRACKS[3]), ("dislike", TRACKS[1])]
