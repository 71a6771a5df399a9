"""Recommendations that use the listener's feedback (docs/listener-loop.md), on a real
database (SQLite and PostgreSQL) written by the speed layer's feedback sink, with the app's
lifespan consuming listener-change events from the real broker; plus the exactness of
``seed_weights`` and ``within_distance`` against the brute force."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from ranking_reference import brute_force
from testkit import INTERNAL_HEADERS, wait_for

from emergify_contracts.listener import CALLER_HEADER, ListenerChange
from emergify_contracts.model import PortableModel
from emergify_contracts.song import Song
from emergify_recommender.api.schemas import RecommendationRequest
from emergify_recommender.index import SongIndex
from emergify_recommender.listener_rules import banned_rows
from emergify_recommender.main import create_app
from emergify_recommender.ranking import rank
from emergify_recommender.recommendation import recommend
from emergify_stream.speed.feedback_sink import FeedbackSink

BATCH_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_batch = itertools.count(1)


@dataclass
class Loop:
    client: TestClient
    songs: list[Song]
    sink: FeedbackSink
    settings: Any
    rec: Any

    def feedback(self, listener: str, track_id: str, signal: str, days_ago: float = 0) -> None:
        """Feedback as the speed layer applies it, then its listener-change event."""
        batch = next(_batch)
        result = self.sink.write(
            "feedback",
            batch,
            [
                {
                    "listener_id": listener,
                    "event_id": uuid.uuid4().hex,
                    "track_id": track_id,
                    "signal": signal,
                    "at": datetime.now(UTC) - timedelta(days=days_ago),
                    "kafka_partition": 0,
                    "kafka_offset": batch,
                }
            ],
        )
        self.rec.publish(
            self.settings.kafka_bootstrap_servers,
            self.settings.listener_changes_topic,
            listener,
            ListenerChange(version=result.version, listener_ids=[listener]),
        )

    def recommend(self, caller: str | None = None, **body: Any) -> Any:
        headers = {CALLER_HEADER: caller} if caller else {}
        return self.client.post("/api/v1/recommendations", json=body, headers=headers)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def loop(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    broker: Any,
    rec: Any,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> Iterator[Loop]:
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('listener') / 'emergify.db'}"
    else:
        pg_name, url = rec.new_pg_database()
    db = rec.open_catalog_db(url)
    try:
        db.insert_songs([rec.song_row(s, 1) for s in sample_songs])
        db.mark_batch(1, len(sample_songs), BATCH_AT)
        db.insert_model(sample_model)
        settings = rec.recommender_settings(url, broker.bootstrap)
        rec.ensure_topics(settings)
        with TestClient(create_app(settings), headers=INTERNAL_HEADERS) as client:
            wait_for(lambda: client.app.state.listener_feed.state == "connected", timeout=60)
            yield Loop(client, sample_songs, FeedbackSink(db.engine), settings, rec)
    finally:
        db.engine.dispose()
        if pg_name:
            rec.drop_pg_database(pg_name)


def session() -> tuple[str, str]:
    """A new signed-in caller header and its listener id."""
    user = f"u{uuid.uuid4().hex[:10]}"
    return f"session:{user}", f"spotify:{user}"


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["track_id"] for item in response.json()["items"]]


def test_a_disliked_song_is_never_returned_again(loop: Loop) -> None:
    caller, listener = session()
    seed = loop.songs[42].track_id
    first = ids(loop.recommend(caller, seeds=[seed], include_recent=True))
    disliked = first[0]
    loop.feedback(listener, disliked, "dislike")

    def gone() -> bool:
        return disliked not in ids(loop.recommend(caller, seeds=[seed], include_recent=True))

    wait_for(gone, timeout=30)
    body = loop.recommend(caller, seeds=[seed], include_recent=True, limit=100).json()
    assert body["listener_id"] == listener
    assert disliked not in {item["track_id"] for item in body["items"]}
    # Another listener still gets it: the rule is the listener's own.
    other, _ = session()
    assert disliked in ids(loop.recommend(other, seeds=[seed]))


def test_a_listener_change_event_drops_the_cached_state(loop: Loop) -> None:
    states = loop.client.app.state.listeners
    caller, listener = session()
    track = loop.songs[3].track_id
    loop.recommend(caller, seeds=[loop.songs[9].track_id])  # cached from here on
    assert track not in states.get(listener).disliked
    loop.sink.write(
        "feedback",
        next(_batch),
        [
            {
                "listener_id": listener,
                "event_id": uuid.uuid4().hex,
                "track_id": track,
                "signal": "dislike",
                "at": datetime.now(UTC),
                "kafka_partition": 0,
                "kafka_offset": 0,
            }
        ],
    )
    assert track not in states.get(listener).disliked  # the table changed, nobody said so
    loop.rec.publish(
        loop.settings.kafka_bootstrap_servers,
        loop.settings.listener_changes_topic,
        listener,
        ListenerChange(version=10_000, listener_ids=[listener]),
    )
    wait_for(lambda: track in states.get(listener).disliked, timeout=30)
    assert states.version >= 10_000


def test_a_banned_artist_has_no_song_in_the_answer(loop: Loop) -> None:
    caller, listener = session()
    by_artist: dict[str, list[Song]] = {}
    for song in loop.songs:
        for artist in song.artists:
            by_artist.setdefault(artist.casefold(), []).append(song)
    artist, songs = max(by_artist.items(), key=lambda kv: len(kv[1]))
    assert len(songs) >= 3, "the sample holds an artist with several songs"
    seed, banned = songs[0], songs[1]
    rules = {"include_recent": True, "limit": 100, "max_per_artist": 50, "max_popularity": 100}
    before = loop.recommend(caller, seeds=[seed.track_id], **rules).json()["items"]
    assert any(artist in [a.casefold() for a in item["artists"]] for item in before)
    loop.feedback(listener, banned.track_id, "ban_artist")

    def none_of_theirs() -> bool:
        body = loop.recommend(caller, seeds=[seed.track_id], **rules).json()
        return not any(artist in [a.casefold() for a in item["artists"]] for item in body["items"])

    wait_for(none_of_theirs, timeout=30)


def test_a_liked_song_becomes_a_weighted_seed(loop: Loop) -> None:
    caller, listener = session()
    seed, liked = loop.songs[42].track_id, loop.songs[700].track_id
    loop.feedback(listener, liked, "like", days_ago=30)

    def liked_is_a_seed() -> bool:
        body = loop.recommend(caller, seeds=[seed], include_recent=True).json()
        return any(s["why"] == "like" for s in body["seeds_used"])

    wait_for(liked_is_a_seed, timeout=30)
    body = loop.recommend(caller, seeds=[seed], include_recent=True, limit=100).json()
    assert body["seeds_used"][0] == {"track_id": seed, "weight": 1.0, "why": "seed"}
    assert body["seeds_used"][1]["track_id"] == liked
    assert body["seeds_used"][1]["weight"] == pytest.approx(0.5, rel=1e-3)  # one half-life
    assert liked not in {item["track_id"] for item in body["items"]}
    assert {item["seed_track_id"] for item in body["items"]} == {seed, liked}


def test_recent_songs_are_skipped_unless_asked(loop: Loop) -> None:
    caller, _ = session()
    seed = loop.songs[7].track_id
    first = ids(loop.recommend(caller, seeds=[seed], limit=10))
    second = ids(loop.recommend(caller, seeds=[seed], limit=10))
    assert not set(first) & set(second)
    again = ids(loop.recommend(caller, seeds=[seed], limit=10, include_recent=True))
    assert again == first  # the exact nearest, recent or not


def test_api_key_callers_name_their_listener(loop: Loop) -> None:
    seed = loop.songs[7].track_id
    missing = loop.recommend("key:k1", seeds=[seed], include_recent=True)
    assert missing.status_code == 422
    assert "listener_id" in missing.json()["detail"]
    named = loop.recommend("key:k1", seeds=[seed], listener_id="alice")
    assert named.json()["listener_id"] == "key:k1:alice"
    anonymous = loop.recommend("key:k1", seeds=[seed])  # no listener rules asked: none apply
    assert anonymous.status_code == 200 and anonymous.json()["listener_id"] is None


def test_a_session_cannot_act_for_another_listener(loop: Loop) -> None:
    caller, _ = session()
    response = loop.recommend(caller, seeds=[loop.songs[7].track_id], listener_id="spotify:x")
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("application/problem+json")
    assert (
        loop.client.get(
            "/api/v1/listeners/spotify:x/feedback", headers={CALLER_HEADER: caller}
        ).status_code
        == 403
    )


def test_a_listener_reads_their_feedback_newest_first(loop: Loop) -> None:
    caller, listener = session()
    a, b = loop.songs[1].track_id, loop.songs[2].track_id
    loop.feedback(listener, a, "like", days_ago=2)
    loop.feedback(listener, b, "dislike", days_ago=1)
    body = loop.client.get("/api/v1/listeners/me/feedback", headers={CALLER_HEADER: caller}).json()
    assert body["listener_id"] == listener
    assert body["count"] == 2
    assert [(i["track_id"], i["signal"]) for i in body["items"]] == [(b, "dislike"), (a, "like")]


# --- exactness of the new request options ------------------------------------------------


def test_weighted_seeds_rank_exactly_as_the_brute_force(sample_index: SongIndex) -> None:
    rng = np.random.default_rng(13)
    for _ in range(30):
        seeds = rng.choice(len(sample_index), size=int(rng.integers(1, 5)), replace=False)
        weights = rng.uniform(0.02, 1.0, size=seeds.size)
        limit = int(rng.integers(1, 80))
        kwargs: dict[str, Any] = {"seeds": seeds.tolist(), "max_per_artist": 2}
        got = rank(
            sample_index, sample_index.z[seeds], None, limit, query_weights=weights, **kwargs
        )
        want = brute_force(
            sample_index, sample_index.z[seeds], limit, query_weights=weights, **kwargs
        )
        assert [(r.row, r.distance, r.seed) for r in got] == [
            (r.row, r.distance, r.seed) for r in want
        ]
    # A lighter seed reaches less far: fewer of its songs make the list.
    a, b = 42, 700
    even = rank(sample_index, sample_index.z[[a, b]], None, 60, seeds=[a, b])
    light = rank(
        sample_index,
        sample_index.z[[a, b]],
        None,
        60,
        seeds=[a, b],
        query_weights=np.array([1.0, 0.2]),
    )
    assert sum(r.seed == 1 for r in light) < sum(r.seed == 1 for r in even)


def test_within_distance_returns_every_song_inside_the_threshold(
    sample_index: SongIndex,
) -> None:
    seed = 42
    everything = brute_force(
        sample_index, sample_index.z[[seed]], len(sample_index), seeds=[seed], max_per_artist=2
    )
    for threshold in (everything[5].distance, everything[60].distance, 0.5):
        body = RecommendationRequest(
            seeds=[sample_index.track_id(seed)],
            within_distance=threshold,
            limit=500,
            max_popularity=100,
        )
        got = recommend(sample_index, body)
        want = [r for r in everything if r.distance <= threshold][:500]
        assert [i.track_id for i in got.items] == [sample_index.track_id(r.row) for r in want]
        assert all(i.distance <= threshold for i in got.items)
    with pytest.raises(ValueError, match="within_distance"):
        RecommendationRequest(seeds=[sample_index.track_id(seed)], limit=200)


def test_a_banned_track_blocks_every_song_sharing_an_artist(sample_index: SongIndex) -> None:
    row = next(r for r in range(len(sample_index)) if len(sample_index.artist_hashes[r]) >= 1)
    keys = set(sample_index.artist_hashes[row])
    expected = [r for r in range(len(sample_index)) if keys & set(sample_index.artist_hashes[r])]
    got = banned_rows(sample_index, frozenset({sample_index.track_id(row)}))
    assert got.tolist() == expected
