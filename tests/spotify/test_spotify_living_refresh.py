"""The scheduled refresh of living playlists, on real HTTP with the Spotify sandbox and a real
recommender: a playlist whose last refresh is older than the interval is re-ranked, once, and
Spotify is brought to the new ranking with exactly the writes the difference needs; the schedule
lives in the database (a scheduler built afresh, as after a restart, or a second replica, finds
nothing due), not in a timer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from spotify_stack import create_living_playlist
from testkit import wait_for

from emergify_contracts.listener import living_playlist_items, living_playlists
from emergify_spotify.living_refresh import RefreshScheduler

WRITES = ("POST /v1/playlists/{id}/items", "DELETE /v1/playlists/{id}/items")


@pytest.fixture(scope="module")
def stack(refresh_stack):  # type: ignore[no-untyped-def]
    return refresh_stack


@pytest.fixture
def engine(stack: Any) -> Iterator[sa.Engine]:
    e = sa.create_engine(stack.spotify_db_url)
    yield e
    e.dispose()


def spotify_playlist(stack: Any, user: str, playlist_id: str) -> list[str]:
    with stack.sandbox_api() as api:
        mine = api.get(f"/_sandbox/users/{user}/playlists").json()["items"]
    return next(p["track_ids"] for p in mine if p["id"] == playlist_id)


def state(engine: sa.Engine, playlist_id: str) -> sa.Row:
    with engine.connect() as conn:
        return conn.execute(
            sa.select(living_playlists).where(living_playlists.c.playlist_id == playlist_id)
        ).one()


def desired(engine: sa.Engine, playlist_id: str) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(living_playlist_items.c.track_id).where(
                    living_playlist_items.c.playlist_id == playlist_id
                )
            ).scalars()
        )


def test_a_stale_playlist_is_re_ranked_once_on_schedule(
    stack: Any, signed_in: Callable[[str], httpx.Client], engine: sa.Engine
) -> None:
    services = stack.spotify.app.state.services
    scheduler: RefreshScheduler = services.refresher
    assert scheduler is not None and scheduler.check_seconds == 2.0
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[1200:1202], 8, "Scheduled")
    playlist_id = created["id"]
    spotify_id = created["spotify_playlist_id"]
    ranked = [s["track_id"] for s in created["songs"]]
    assert len(ranked) == 8

    # The desired state drifts from today's ranking (two far songs replace the two furthest,
    # as stale matches would) and Spotify follows it.
    strangers = [t for t in stack.catalog_ids[3000:3100] if t not in ranked][:2]
    with engine.begin() as conn:
        t = living_playlist_items
        conn.execute(t.delete().where(t.c.playlist_id == playlist_id, t.c.track_id.in_(ranked[6:])))
        conn.execute(
            t.insert(),
            [
                {
                    "playlist_id": playlist_id,
                    "track_id": x,
                    "distance": 9.0,
                    "added_at": datetime.now(UTC),
                }
                for x in strangers
            ],
        )
        conn.execute(
            living_playlists.update()
            .where(living_playlists.c.playlist_id == playlist_id)
            .values(version=living_playlists.c.version + 1)
        )
    assert services.sync.sync_now(playlist_id) is not None
    assert set(spotify_playlist(stack, "demo", spotify_id)) == set(ranked[:6] + strangers)
    before = state(engine, playlist_id)
    counts = stack.request_counts()
    refreshes = scheduler.refreshes

    # Last refreshed two days ago: due.
    with engine.begin() as conn:
        conn.execute(
            living_playlists.update()
            .where(living_playlists.c.playlist_id == playlist_id)
            .values(refreshed_at=datetime.now(UTC) - timedelta(days=2))
        )
    wait_for(
        lambda: state(engine, playlist_id).synced_version > before.version,
        60,
        "the scheduled refresh to re-rank and sync the playlist",
    )
    after = state(engine, playlist_id)
    assert after.version == after.synced_version == before.version + 1
    assert scheduler.refreshes == refreshes + 1
    assert desired(engine, playlist_id) == set(ranked)
    on_spotify = spotify_playlist(stack, "demo", spotify_id)
    assert len(on_spotify) == len(set(on_spotify)) == 8
    assert set(on_spotify) == set(ranked)
    # Exactly the writes the difference needs: one removal, one addition.
    written = stack.request_counts()
    for write in WRITES:
        assert written.get(write, 0) == counts.get(write, 0) + 1, write
    listed = browser.get(f"/api/v1/spotify/living-playlists/{playlist_id}").json()
    refreshed_at = datetime.fromisoformat(listed["last_refresh"])
    assert refreshed_at > datetime.now(UTC) - timedelta(minutes=5)
    assert listed["songs_added"] == 8 + 2  # the two re-entering songs

    # Not due again: two more checks of the running scheduler, and a scheduler built afresh
    # on the same database (a restarted process, or another replica), refresh nothing.
    checks = scheduler.checks
    wait_for(lambda: scheduler.checks >= checks + 2, 30, "two more scheduled checks")
    fresh = RefreshScheduler(
        services.settings,
        services.living,
        services.tokens,
        services.recommender,
        services.sync,
        services.publisher,
    )
    assert fresh.refresh_due() == []
    assert state(engine, playlist_id).version == after.version
    unchanged = stack.request_counts()
    for write in WRITES:
        assert unchanged.get(write, 0) == written.get(write, 0), write

    # A day later (as the fresh scheduler sees it), it is due again: ranked the same,
    # Spotify untouched.
    changes = fresh.refresh_due(now=datetime.now(UTC) + timedelta(days=1))
    assert [c.playlist_id for c in changes] == [playlist_id]
    assert changes[0].version == after.version + 1
    assert desired(engine, playlist_id) == set(ranked)
    assert state(engine, playlist_id).synced_version == after.version + 1
    final = stack.request_counts()
    for write in WRITES:
        assert final.get(write, 0) == written.get(write, 0), write
    assert spotify_playlist(stack, "demo", spotify_id) == on_spotify


def test_a_stopped_playlist_is_never_refreshed(
    stack: Any, signed_in: Callable[[str], httpx.Client], engine: sa.Engine
) -> None:
    services = stack.spotify.app.state.services
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[1500:1501], 4, "Stopped")
    playlist_id = created["id"]
    assert browser.delete(f"/api/v1/spotify/living-playlists/{playlist_id}").status_code == 200
    stale = datetime.now(UTC) - timedelta(days=2)
    with engine.begin() as conn:
        conn.execute(
            living_playlists.update()
            .where(living_playlists.c.playlist_id == playlist_id)
            .values(refreshed_at=stale)
        )
    checks = services.refresher.checks
    wait_for(lambda: services.refresher.checks >= checks + 2, 30, "two more scheduled checks")
    row = state(engine, playlist_id)
    assert row.version == 1
    assert row.refreshed_at.replace(tzinfo=UTC) < datetime.now(UTC) - timedelta(days=1)


def test_a_refresh_never_overwrites_a_newer_desired_state(
    stack: Any, signed_in: Callable[[str], httpx.Client], engine: sa.Engine
) -> None:
    store = stack.spotify.app.state.services.living
    browser = signed_in("demo")
    created = create_living_playlist(browser, stack.catalog_ids[1700:1701], 3, "Raced")
    playlist_id = created["id"]
    songs = desired(engine, playlist_id)
    other = [(t, 5.0) for t in stack.catalog_ids[2500:2503]]
    # Ranked at version 1, but a match (or another refresh) wrote version 2 meanwhile.
    assert store.replace_items(playlist_id, other, expect_version=1) == 2
    assert store.replace_items(playlist_id, [(t, 0.1) for t in songs], expect_version=1) is None
    assert desired(engine, playlist_id) == {t for t, _ in other}
    assert state(engine, playlist_id).version == 2
    # Nor a stopped playlist's.
    assert browser.delete(f"/api/v1/spotify/living-playlists/{playlist_id}").status_code == 200
    assert store.replace_items(playlist_id, [(t, 0.1) for t in songs], expect_version=2) is None
    assert state(engine, playlist_id).version == 2
