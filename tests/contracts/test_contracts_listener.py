"""The listener contracts: feedback events and the tables they land in."""

from __future__ import annotations

import subprocess
import sys

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from emergify_contracts.listener import FeedbackEvent, FeedbackSignal, listener_feedback

TRACK = "70kFiCsoYnJxMgIZ82WQmj"


def test_feedback_event_round_trips_as_json() -> None:
    event = FeedbackEvent(listener_id="spotify:alice", track_id=TRACK, signal="dislike")
    again = FeedbackEvent.model_validate_json(event.model_dump_json())
    assert again == event
    assert again.signal is FeedbackSignal.DISLIKE


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"signal": "erase", "track_id": TRACK}, "erase carries no track_id"),
        ({"signal": "like", "track_id": None}, "every other signal needs one"),
        ({"signal": "like", "track_id": "short"}, "22-character"),
        ({"signal": "love", "track_id": TRACK}, "Input should be"),
        ({"signal": "like", "track_id": TRACK, "listener_id": "a b"}, "pattern"),
    ],
)
def test_malformed_feedback_is_refused_with_a_reason(fields: dict, reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        FeedbackEvent(**{"listener_id": "spotify:alice", **fields})


def test_listener_tables_are_created_with_the_others(tmp_path) -> None:
    # In a fresh interpreter that never imported the listener module itself.
    db = tmp_path / "db.sqlite"
    code = (
        "import sqlalchemy as sa; from emergify_contracts.tables import create_tables; "
        f"create_tables(sa.create_engine('sqlite:///{db}'))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    names = set(sa.inspect(sa.create_engine(f"sqlite:///{db}")).get_table_names())
    assert {"songs", "listener_feedback", "listener_history", "living_playlists"} <= names
    assert listener_feedback.c.event_id.primary_key
