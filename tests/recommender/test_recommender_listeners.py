"""A listener's state from the listener tables: latest verdict wins, bans, likes as seeds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from emergify_contracts.tables import create_tables, make_engine
from emergify_recommender.listeners import (
    FeedbackItem,
    ListenerStates,
    like_seeds,
    state_from_rows,
)
from emergify_stream.speed.feedback_sink import FeedbackSink

NOW = datetime(2026, 12, 1, tzinfo=UTC)
T = ["0" * 21 + str(i) for i in range(8)]


def item(n: int, track: int, signal: str, days_ago: float) -> FeedbackItem:
    return FeedbackItem(f"{n:032x}", T[track], signal, NOW - timedelta(days=days_ago))


def test_the_latest_verdict_on_a_song_wins() -> None:
    events = [
        item(1, 0, "like", 5),
        item(2, 0, "dislike", 1),  # changed their mind: disliked
        item(3, 1, "dislike", 4),
        item(4, 1, "like", 2),  # and back: liked
        item(5, 2, "ban_artist", 3),
        item(6, 3, "skip", 1),
    ]
    state = state_from_rows("l", events, [], NOW, recent_days=7)
    assert state.disliked == {T[0]}
    assert [t for t, _ in state.likes] == [T[1]]
    assert state.banned_tracks == {T[2]}


def test_recent_history_is_the_window_only() -> None:
    history = [(T[4], NOW - timedelta(days=2)), (T[5], NOW - timedelta(days=9))]
    state = state_from_rows("l", [], history, NOW, recent_days=7)
    assert state.recent == {T[4]}


def test_likes_weigh_less_as_they_age() -> None:
    events = [item(1, 0, "like", 0), item(2, 1, "like", 30), item(3, 2, "like", 60)]
    state = state_from_rows("l", events, [], NOW, recent_days=7)
    seeds = like_seeds(state, NOW, half_life_days=30, limit=2)
    assert [t for t, _ in seeds] == [T[0], T[1]]  # newest first, capped
    assert [w for _, w in seeds] == pytest.approx([1.0, 0.5])


def test_states_follow_the_tables_and_invalidation(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    sink = FeedbackSink(engine)
    states = ListenerStates(engine, recent_days=7)
    base = {"listener_id": "spotify:a", "kafka_partition": 0}
    sink.write(
        "q",
        0,
        [
            {
                **base,
                "event_id": "1" * 32,
                "track_id": T[0],
                "signal": "dislike",
                "at": NOW,
                "kafka_offset": 1,
            }
        ],
    )
    assert states.get("spotify:a").disliked == {T[0]}
    sink.write(
        "q",
        1,
        [
            {
                **base,
                "event_id": "2" * 32,
                "track_id": T[1],
                "signal": "ban_artist",
                "at": NOW,
                "kafka_offset": 2,
            }
        ],
    )
    assert states.get("spotify:a").banned_tracks == frozenset()  # cached until told
    states.invalidate(["spotify:a"], version=2)
    assert states.get("spotify:a").banned_tracks == {T[1]}
    states.served("spotify:a", [T[6], T[7]], NOW)
    assert states.get("spotify:a").recent == {T[6], T[7]}
