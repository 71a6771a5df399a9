"""Feedback through the ingest service: lake first, then the feedback topic keyed by listener."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from emergify_contracts import lake
from emergify_contracts.listener import CALLER_HEADER, FeedbackEvent

TRACK = "70kFiCsoYnJxMgIZ82WQmj"


@pytest.fixture
def feedback_client(broker, make_client):
    return make_client(broker, feedback_topic=f"feedback-{uuid.uuid4().hex[:8]}")


def lake_events(client) -> list[dict]:
    root = Path(client.app.state.settings.lake_uri) / lake.FEEDBACK_DIR
    return [row for f in sorted(root.glob(lake.FILES_GLOB)) for row in pq.read_table(f).to_pylist()]


def test_feedback_reaches_the_lake_and_the_topic_keyed_by_listener(
    feedback_client, consume, broker
) -> None:
    settings = feedback_client.app.state.settings
    session = {CALLER_HEADER: "session:alice"}
    liked = feedback_client.post(
        "/api/v1/feedback", json={"track_id": TRACK, "signal": "like"}, headers=session
    )
    assert liked.status_code == 202, liked.text
    assert liked.json()["listener_id"] == "spotify:alice"
    keyed = feedback_client.post(
        "/api/v1/feedback",
        json={"track_id": TRACK, "signal": "ban_artist", "listener_id": "bob"},
        headers={CALLER_HEADER: "key:k7"},
    )
    assert keyed.json()["listener_id"] == "key:k7:bob"
    erased = feedback_client.delete("/api/v1/listeners/me/feedback", headers=session)
    assert erased.status_code == 202 and erased.json()["signal"] == "erase"

    records = consume(broker.bootstrap, settings.feedback_topic, 3)
    events = {r.key.decode(): [] for r in records}
    for record in records:
        events[record.key.decode()].append(FeedbackEvent.model_validate_json(record.value))
    assert [e.signal for e in events["spotify:alice"]] == ["like", "erase"]
    assert [e.signal for e in events["key:k7:bob"]] == ["ban_artist"]
    # The erase took alice's like out of the lake (the topic keeps it for the speed layer).
    assert {e["event_id"] for e in lake_events(feedback_client)} == {
        keyed.json()["event_id"],
        erased.json()["event_id"],
    }


@pytest.mark.parametrize(
    ("headers", "body", "status", "reason"),
    [
        ({CALLER_HEADER: "key:k7"}, {"track_id": TRACK, "signal": "like"}, 422, "listener_id"),
        (
            {CALLER_HEADER: "session:alice"},
            {"track_id": TRACK, "signal": "like", "listener_id": "bob"},
            403,
            "only act for themselves",
        ),
        (
            {CALLER_HEADER: "key:k7"},
            {"track_id": "nope", "signal": "like", "listener_id": "b"},
            422,
            "track_id",
        ),
        (
            {CALLER_HEADER: "key:k7"},
            {"track_id": TRACK, "signal": "erase", "listener_id": "b"},
            422,
            "signal",
        ),
        (
            {CALLER_HEADER: "key:k7"},
            {"track_id": TRACK, "signal": "like", "listener_id": "a b"},
            422,
            "letters",
        ),
    ],
)
def test_bad_feedback_is_a_4xx_with_the_reason(
    feedback_client, headers, body, status, reason
) -> None:
    response = feedback_client.post("/api/v1/feedback", json=body, headers=headers)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert reason in response.text
    assert lake_events(feedback_client) == []


def test_erase_deletes_the_listeners_earlier_feedback_from_the_lake(
    feedback_client, consume, broker
) -> None:
    alice, bob = {CALLER_HEADER: "session:alice"}, {CALLER_HEADER: "session:bob"}

    def send(headers: dict[str, str], signal: str) -> str:
        r = feedback_client.post(
            "/api/v1/feedback", json={"track_id": TRACK, "signal": signal}, headers=headers
        )
        assert r.status_code == 202, r.text
        return r.json()["event_id"]

    send(alice, "like")
    send(alice, "dislike")
    kept_bob = send(bob, "like")
    first_erase = feedback_client.delete("/api/v1/listeners/me/feedback", headers=alice)
    assert first_erase.status_code == 202, first_erase.text
    after = send(alice, "ban_artist")
    erased = feedback_client.delete("/api/v1/listeners/me/feedback", headers=alice)
    assert erased.status_code == 202, erased.text

    by_listener: dict[str, list[str]] = {}
    for row in lake_events(feedback_client):
        by_listener.setdefault(row["listener_id"], []).append(row["event_id"])
    # Alice: only the last erase (a listener id and a time) stays; Bob is untouched.
    assert by_listener == {"spotify:alice": [erased.json()["event_id"]], "spotify:bob": [kept_bob]}
    root = Path(feedback_client.app.state.settings.lake_uri) / lake.FEEDBACK_DIR
    names = [f.name for f in root.glob(lake.FILES_GLOB)]
    assert not any("alice" in name or "bob" in name for name in names)  # ids are hashed
    # The topic still carries every event in order: the speed layer applies the erases.
    settings = feedback_client.app.state.settings
    records = consume(broker.bootstrap, settings.feedback_topic, 7)
    alice_events = [
        FeedbackEvent.model_validate_json(r.value)
        for r in records
        if r.key.decode() == "spotify:alice"
    ]
    assert [e.signal for e in alice_events] == ["like", "dislike", "erase", "ban_artist", "erase"]
    assert alice_events[3].event_id == after
