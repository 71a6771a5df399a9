"""Keeping the in-memory catalog fresh without a restart: change events through the real
broker, model events, the database poll when Kafka is absent, and a late broker."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker
from emergify_contracts.events import CatalogChange, ModelPublished
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES, Song

StartApp = Callable[..., TestClient]


def feed_connected(client: TestClient) -> bool:
    return client.get("/health").json().get("change_feed") == "connected"


def song_visible(client: TestClient, track_id: str) -> bool:
    return client.get(f"/api/v1/songs/{track_id}").status_code == 200


def test_a_catalog_change_makes_new_songs_recommendable_without_a_restart(
    catalog_db: Any,
    broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    old, new = sample_songs[:4000], sample_songs[4000:]
    catalog_db.insert_songs([rec.song_row(s, 1) for s in old])
    catalog_db.insert_model(sample_model)
    # No poll during this test: only the event can bring the new songs in.
    settings = rec.recommender_settings(catalog_db.url, broker.bootstrap)
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(lambda: feed_connected(client), what="the change feed to connect")
    assert client.get("/health").json()["songs"] == len(old)

    catalog_db.insert_songs([rec.song_row(s, 2) for s in new])
    changed = old[0]
    catalog_db.update_song(changed.track_id, popularity=3, table_version=2)
    assert not song_visible(client, new[0].track_id), "nothing announced the batch yet"
    rec.publish(
        broker.bootstrap,
        settings.catalog_changes_topic,
        "2",
        CatalogChange(
            table_version=2,
            upserted_ids=[s.track_id for s in new] + [changed.track_id],
            songs=len(sample_songs),
        ),
    )

    wait_for(lambda: song_visible(client, new[-1].track_id), what="the new songs")
    assert client.get("/health").json()["songs"] == len(sample_songs)
    assert client.get(f"/api/v1/songs/{changed.track_id}").json()["popularity"] == 3
    newcomer = new[10]
    features = {f: getattr(newcomer, f) for f in AUDIO_FEATURES}
    body = client.post("/api/v1/recommendations", json={"seed_features": features}).json()
    assert body["items"][0]["track_id"] == newcomer.track_id
    by_seed = client.post("/api/v1/recommendations", json={"seeds": [newcomer.track_id]})
    assert by_seed.status_code == 200 and by_seed.json()["count"] == 30
    catalog = client.get("/api/v1/catalog").json()
    assert catalog["songs"] == len(sample_songs) and catalog["table_version"] == 2


def test_a_new_model_event_swaps_the_model_while_requests_keep_succeeding(
    catalog_db: Any,
    broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    catalog_db.insert_songs([rec.song_row(s, 1) for s in sample_songs])
    catalog_db.insert_model(sample_model)
    settings = rec.recommender_settings(catalog_db.url, broker.bootstrap)
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(lambda: feed_connected(client), what="the change feed to connect")
    seed = sample_songs[0].track_id

    v2 = rec.fit_portable_model(rec.feature_matrix(sample_songs), k=5, version=2, seed=11)
    catalog_db.insert_model(v2)
    rec.publish(
        broker.bootstrap,
        settings.models_topic,
        "2",
        ModelPublished(
            version=2, k=5, silhouette=v2.silhouette, songs=v2.songs, trained_at=v2.trained_at
        ),
    )

    answered: list[int] = []

    def recommend_on_v2() -> bool:
        response = client.post("/api/v1/recommendations", json={"seeds": [seed]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["count"] == 30
        answered.append(body["model_version"])
        return body["model_version"] == 2

    wait_for(recommend_on_v2, what="model v2 to be served")
    assert set(answered) <= {1, 2}
    model = client.get("/api/v1/model").json()
    assert (model["version"], model["k"]) == (2, 5)
    clusters = client.get("/api/v1/clusters", params={"sample": 100}).json()
    assert len(clusters["centroids"]) == 5
    assert {p["cluster"] for p in clusters["points"]} <= set(range(5))


def test_without_kafka_the_poll_keeps_the_catalog_fresh(
    sqlite_url: str,
    absent_broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    db = rec.open_catalog_db(sqlite_url)
    db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:3000]])
    settings = rec.recommender_settings(
        sqlite_url, absent_broker.bootstrap, refresh_interval_seconds=0.2
    )
    client = app_client(settings)
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["model_version"] is None
    assert health["change_feed"] != "connected"

    db.insert_songs([rec.song_row(s, 2) for s in sample_songs[3000:]])
    wait_for(
        lambda: client.get("/health").json()["songs"] == len(sample_songs),
        what="the poll to load the new songs",
    )

    db.insert_model(sample_model)
    wait_for(
        lambda: client.get("/health").json()["model_version"] == 1, what="the poll to load model v1"
    )
    song = client.get(f"/api/v1/songs/{sample_songs[-1].track_id}").json()
    assert song["model_version"] == 1 and song["cluster"] is not None
    db.engine.dispose()


def test_a_broker_that_appears_late_is_picked_up(
    sqlite_url: str,
    absent_broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
) -> None:
    db = rec.open_catalog_db(sqlite_url)
    db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:100]])
    settings = rec.recommender_settings(sqlite_url, absent_broker.bootstrap)
    client = app_client(settings)
    assert client.get("/health").status_code == 200, "serving does not wait for Kafka"

    absent_broker.start()
    rec.ensure_topics(settings)
    wait_for(lambda: feed_connected(client), what="the change feed to connect")
    db.insert_songs([rec.song_row(sample_songs[100], 2)])
    rec.publish(
        absent_broker.bootstrap,
        settings.catalog_changes_topic,
        "2",
        CatalogChange(table_version=2, upserted_ids=[sample_songs[100].track_id], songs=101),
    )

    wait_for(
        lambda: song_visible(client, sample_songs[100].track_id),
        what="the song announced on the late broker",
    )
    db.engine.dispose()


@pytest.mark.parametrize("payload", [b"not json", b'{"table_version": "x"}'])
def test_a_malformed_event_is_skipped_and_the_feed_keeps_going(
    sqlite_url: str,
    broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    payload: bytes,
) -> None:
    db = rec.open_catalog_db(sqlite_url)
    db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:50]])
    settings = rec.recommender_settings(sqlite_url, broker.bootstrap)
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(lambda: feed_connected(client), what="the change feed to connect")

    rec.publish_raw(broker.bootstrap, settings.catalog_changes_topic, payload)
    db.insert_songs([rec.song_row(sample_songs[50], 2)])
    rec.publish(
        broker.bootstrap,
        settings.catalog_changes_topic,
        "2",
        CatalogChange(table_version=2, upserted_ids=[sample_songs[50].track_id], songs=51),
    )

    wait_for(
        lambda: song_visible(client, sample_songs[50].track_id),
        what="the event after the malformed one",
    )
    assert client.get("/health").json()["change_feed"] == "connected"
    db.engine.dispose()


def test_the_change_feed_survives_a_broker_restart(
    sqlite_url: str,
    fresh_broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
) -> None:
    db = rec.open_catalog_db(sqlite_url)
    db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:100]])
    settings = rec.recommender_settings(sqlite_url, fresh_broker.bootstrap)
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(lambda: feed_connected(client), what="the change feed to connect")

    # The embedded broker keeps topics in memory: a restart starts from nothing.
    fresh_broker.stop()
    assert client.get("/health").status_code == 200
    fresh_broker.start()
    rec.ensure_topics(settings)
    db.insert_songs([rec.song_row(sample_songs[100], 2)])
    event = CatalogChange(table_version=2, upserted_ids=[sample_songs[100].track_id], songs=101)

    def announce_then_look() -> bool:
        # Records published before the feed has re-positioned on the new, empty log are
        # not replayed (it starts at the end), so announce again, as the next micro-batch
        # would, until one gets through.
        rec.publish(fresh_broker.bootstrap, settings.catalog_changes_topic, "2", event)
        return song_visible(client, sample_songs[100].track_id)

    wait_for(announce_then_look, timeout=60, what="the song after the broker restart")
    db.engine.dispose()
