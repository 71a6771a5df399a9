"""The listener loop on Spotify's side, through the api-gateway on real HTTP: the listener's
playlists, "recommend for me", expanding a playlist, and living playlists kept in sync with
Spotify by the worker (woken by change events on the embedded broker).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from spotify_stack import create_living_playlist
from testkit import wait_for

from emergify_contracts.listener import (
    LivingPlaylistChange,
    living_playlist_items,
    living_playlists,
)

ROAD_TRIP = "demoroadtrip000000000a"


@pytest.fixture(scope="module")
def stack(loop_stack):  # type: ignore[no-untyped-def]
    """Every test here runs on the stack with a broker (``signed_in`` uses ``stack``)."""
    return loop_stack


def spotify_playlist(stack: Any, user: str, playlist_id: str) -> list[str]:
    """The track ids Spotify (the sandbox) holds in the playlist, in order."""
    with stack.sandbox_api() as api:
        mine = api.get(f"/_sandbox/users/{user}/playlists").json()["items"]
    return next(p["track_ids"] for p in mine if p["id"] == playlist_id)


def liked_ids(stack: Any, user: str) -> list[str]:
    with stack.sandbox_api() as api:
        users = api.get("/_sandbox/users").json()["items"]
    return next(u["liked_track_ids"] for u in users if u["id"] == user)


def publish(bootstrap: str, topic: str, change: LivingPlaylistChange) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(
                topic, change.model_dump_json().encode(), key=change.playlist_id.encode()
            )
        finally:
            await producer.stop()

    asyncio.run(send())


def test_my_playlists_count_catalog_songs(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo")
    answer = browser.get("/api/v1/spotify/me/playlists")
    assert answer.status_code == 200, answer.text
    road_trip = next(p for p in answer.json()["items"] if p["id"] == ROAD_TRIP)
    songs = spotify_playlist(stack, "demo", ROAD_TRIP)
    assert road_trip["name"] == "Road trip"
    assert road_trip["items_total"] == len(songs) > 0
    assert road_trip["in_catalog"] == len(set(songs) & set(stack.catalog_ids))


def test_for_me_seeds_are_catalog_songs_from_history(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo")
    # Ten seeds: the newest top tracks, all of weight 1, which today's recommender ranks.
    answer = browser.post(
        "/api/v1/spotify/recommendations/for-me",
        json={"limit": 10, "max_popularity": 100, "max_seeds": 10},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    seeds = body["seeds_used"]
    assert len(seeds) == 10
    history = liked_ids(stack, "demo")
    unknown = set(history) - set(stack.catalog_ids)
    assert unknown, "the demo listener has songs the catalog lacks"
    assert {s["track_id"] for s in seeds} <= set(stack.catalog_ids) & set(history)
    assert all(s["weight"] == 1.0 and "last 4 weeks" in s["why"] for s in seeds)
    assert body["seed"]["track_ids"] == [s["track_id"] for s in seeds]
    assert 0 < body["count"] == len(body["items"]) <= 10


def test_for_me_without_catalog_songs_says_why(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    answer = signed_in("nocatalog").post("/api/v1/spotify/recommendations/for-me", json={})
    assert answer.status_code == 422, answer.text
    assert "catalog" in answer.json()["detail"]


def test_expand_excludes_the_playlists_songs(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo")
    answer = browser.post(
        f"/api/v1/spotify/playlists/{ROAD_TRIP}/expand",
        json={"limit": 30, "max_popularity": 100, "max_per_artist": 5},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    songs = spotify_playlist(stack, "demo", ROAD_TRIP)
    known = [t for t in songs if t in set(stack.catalog_ids)]
    assert [s["track_id"] for s in body["seeds_used"]] == known
    assert body["count"] == 30
    assert not {i["track_id"] for i in body["items"]} & set(songs)


def test_expand_a_playlist_the_catalog_does_not_know(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("nocatalog")
    saved = browser.post(
        "/api/v1/spotify/playlists",
        json={"name": "Unknown songs", "track_ids": liked_ids(stack, "nocatalog")[:3]},
    )
    assert saved.status_code == 201, saved.text
    answer = browser.post(f"/api/v1/spotify/playlists/{saved.json()['id']}/expand", json={})
    assert answer.status_code == 422, answer.text
    assert "the catalog knows none of the playlist's 3 songs" in answer.json()["detail"]


def test_living_playlist_is_created_on_spotify(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[300:303], size=12)
    songs = [s["track_id"] for s in created["songs"]]
    assert len(songs) == 12 and created["synced_version"] == created["version"] == 1
    assert spotify_playlist(stack, "demo", created["spotify_playlist_id"]) == songs
    listed = browser.get("/api/v1/spotify/living-playlists").json()
    mine = next(p for p in listed if p["id"] == created["id"])
    assert mine["songs_added"] == 12 and mine["last_refresh"] is not None
    # Another listener cannot see it.
    other = signed_in("demo2").get(f"/api/v1/spotify/living-playlists/{created['id']}")
    assert other.status_code == 404


def test_worker_syncs_a_desired_change_once(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    services = stack.spotify.app.state.services
    wait_for(lambda: services.sync.consuming, 60, "the sync worker to join its group")
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[400:402], size=10)
    playlist_id, spotify_id = created["id"], created["spotify_playlist_id"]
    before = [s["track_id"] for s in created["songs"]]
    # As the recommender will: the 3 furthest songs leave, 3 new songs enter, version bumps.
    entering = [t for t in stack.catalog_ids[600:700] if t not in before][:3]
    desired = before[:7] + entering
    engine = sa.create_engine(stack.spotify_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                living_playlist_items.delete().where(
                    living_playlist_items.c.playlist_id == playlist_id,
                    living_playlist_items.c.track_id.in_(before[7:]),
                )
            )
            conn.execute(
                living_playlist_items.insert(),
                [
                    {
                        "playlist_id": playlist_id,
                        "track_id": t,
                        "distance": 0.01 * n,
                        "added_at": datetime.now(UTC),
                    }
                    for n, t in enumerate(entering)
                ],
            )
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id == playlist_id)
                .values(version=2)
            )

        def synced() -> bool:
            return (
                browser.get(f"/api/v1/spotify/living-playlists/{playlist_id}").json()[
                    "synced_version"
                ]
                == 2
            )

        publish(
            stack.broker,
            "emergify.living-playlists.v1",
            LivingPlaylistChange(playlist_id=playlist_id, version=2),
        )
        wait_for(synced, 30, "the worker to sync version 2")
        on_spotify = spotify_playlist(stack, "demo", spotify_id)
        assert sorted(on_spotify) == sorted(desired)
        assert len(on_spotify) == len(set(on_spotify))

        # Replayed: the change is announced again with Spotify already in that state.
        counts = stack.request_counts()
        syncs = services.sync.syncs
        with engine.begin() as conn:
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id == playlist_id)
                .values(synced_version=1)
            )
        publish(
            stack.broker,
            "emergify.living-playlists.v1",
            LivingPlaylistChange(playlist_id=playlist_id, version=2),
        )
        wait_for(synced, 30, "the worker to sync the replayed change")
        assert services.sync.syncs == syncs + 1
        after = stack.request_counts()
        for write in ("POST /v1/playlists/{id}/items", "DELETE /v1/playlists/{id}/items"):
            assert after.get(write, 0) == counts.get(write, 0), write
        assert spotify_playlist(stack, "demo", spotify_id) == on_spotify
    finally:
        engine.dispose()


def test_refresh_and_stop(stack: Any, signed_in: Callable[[str], httpx.Client]) -> None:
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[500:502], size=5)
    refreshed = browser.post(f"/api/v1/spotify/living-playlists/{created['id']}/refresh")
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    # Same seeds and catalog: the same songs, kept with their first added_at, one version on.
    assert body["version"] == body["synced_version"] == 2
    assert body["songs"] == created["songs"]
    assert body["songs_added"] == 5
    stopped = browser.delete(f"/api/v1/spotify/living-playlists/{created['id']}")
    assert stopped.status_code == 200 and stopped.json()["stopped_at"] is not None
    again = browser.post(f"/api/v1/spotify/living-playlists/{created['id']}/refresh")
    assert again.status_code == 409, again.text
    # The Spotify playlist stays the listener's.
    songs = spotify_playlist(stack, "demo", created["spotify_playlist_id"])
    assert songs == [s["track_id"] for s in created["songs"]]


def test_a_signed_out_listener_stays_pending(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo2")
    created = create_living_playlist(browser, stack.catalog_ids[900:902], size=4)
    assert browser.post("/api/v1/spotify/logout").status_code == 303  # tokens forgotten
    engine = sa.create_engine(stack.spotify_db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id == created["id"])
                .values(version=2)
            )
        worker = stack.spotify.app.state.services.sync
        assert created["id"] in {p.playlist_id for p in worker.store.pending()}
        assert worker.sweep() == 0  # skipped, not failed
        assert created["id"] in {p.playlist_id for p in worker.store.pending()}
        with engine.connect() as conn:
            synced = conn.execute(
                sa.select(living_playlists.c.synced_version).where(
                    living_playlists.c.playlist_id == created["id"]
                )
            ).scalar_one()
        assert synced == 1  # kept pending for when they sign in again
        songs = spotify_playlist(stack, "demo2", created["spotify_playlist_id"])
        assert songs == [s["track_id"] for s in created["songs"]]
    finally:
        engine.dispose()


def test_expand_within_distance_returns_every_song_within_it(
    stack: Any, signed_in: Callable[[str], httpx.Client]
) -> None:
    browser = signed_in("demo")
    path = f"/api/v1/spotify/playlists/{ROAD_TRIP}/expand"
    # include_recent: the second ask must not skip what the first one just recommended.
    rules = {"max_popularity": 100, "max_per_artist": 5, "include_recent": True}
    nearest = browser.post(path, json={"limit": 40, **rules}).json()["items"]
    threshold = nearest[14]["distance"]
    within = browser.post(path, json={"limit": 40, "within_distance": threshold, **rules})
    assert within.status_code == 200, within.text
    items = within.json()["items"]
    assert items and all(i["distance"] <= threshold for i in items)
    # Every song of the 40 nearest within the threshold, and nothing else.
    assert [i["track_id"] for i in items] == [
        i["track_id"] for i in nearest if i["distance"] <= threshold
    ]
    assert not {i["track_id"] for i in items} & set(spotify_playlist(stack, "demo", ROAD_TRIP))
    # Above the recommender's fixed-count cap, a count alone is refused with the reason.
    refused = browser.post(path, json={"limit": 300, **rules})
    assert refused.status_code == 422
    assert "within_distance" in refused.json()["detail"]
