"""Feedback changes the next recommendation, through the gateway, on real parts: ingest
publishes the feedback, Spark Structured Streaming materialises it and announces the
listener change, the recommender drops the listener's cached state."""

from __future__ import annotations

from pathlib import Path

import httpx
from testkit import wait_for

from emergify_cli.stack import Stack

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"
SEED = "70kFiCsoYnJxMgIZ82WQmj"


def test_dislike_ban_and_like_shape_the_next_recommendation(
    stack: Stack, api: httpx.Client
) -> None:
    with SAMPLE.open("rb") as f:
        r = api.post(
            "/api/v1/songs/upload", files={"file": ("every_fresh_find.csv", f, "text/csv")}
        )
    assert r.status_code == 202, r.text
    wait_for(
        lambda: api.get("/api/v1/catalog").json()["songs"] == 4470,
        timeout=300,
        what="the sample catalog",
    )
    rules = {"seeds": [SEED], "listener_id": "e2e", "include_recent": True, "limit": 50}

    def recommend() -> dict:
        response = api.post("/api/v1/recommendations", json=rules)
        assert response.status_code == 200, response.text
        return response.json()

    first = recommend()
    assert first["listener_id"] == "key:admin:e2e"
    disliked = first["items"][0]["track_id"]
    banned = first["items"][1]
    feedback = api.post(
        "/api/v1/feedback", json={"track_id": disliked, "signal": "dislike", "listener_id": "e2e"}
    )
    assert feedback.status_code == 202, feedback.text
    wait_for(
        lambda: disliked not in {i["track_id"] for i in recommend()["items"]},
        timeout=180,
        what="the dislike to reach the recommender",
    )

    artists = set(banned["artists"])
    r = api.post(
        "/api/v1/feedback",
        json={"track_id": banned["track_id"], "signal": "ban_artist", "listener_id": "e2e"},
    )
    assert r.status_code == 202, r.text
    wait_for(
        lambda: not any(artists & set(i["artists"]) for i in recommend()["items"]),
        timeout=180,
        what="the ban to reach the recommender",
    )

    liked = first["items"][5]["track_id"]
    r = api.post(
        "/api/v1/feedback", json={"track_id": liked, "signal": "like", "listener_id": "e2e"}
    )
    assert r.status_code == 202, r.text
    after = wait_for(
        lambda: (b := recommend())["seeds_used"][1:] and b,
        timeout=180,
        what="the like to become a seed",
    )
    assert after["seeds_used"][1]["track_id"] == liked
    assert after["seeds_used"][1]["why"] == "like"
    assert disliked not in {i["track_id"] for i in after["items"]}

    stored = api.get("/api/v1/listeners/e2e/feedback")
    assert stored.status_code == 200, stored.text
    signals = [i["signal"] for i in stored.json()["items"]]
    assert signals == ["like", "ban_artist", "dislike"]  # newest first
