"""Living playlists on the serving side: new catalog songs enter the subscriptions they beat,
the rules keep the wrong ones out, a replay writes nothing, and feedback removes songs at once.

Real parts: SQLite and PostgreSQL, the recommender's own catalog load, the embedded broker for
the app-level test (catalog change in, living-playlist change out).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import sqlalchemy as sa
from fastapi.testclient import TestClient
from kafka_io import consume
from living_rows import desired, header
from testkit import wait_for

from emergify_cli.broker import EmbeddedBroker
from emergify_contracts.events import CatalogChange
from emergify_contracts.listener import (
    ListenerChange,
    LivingPlaylistChange,
    listener_feedback,
    living_batches,
    living_playlist_items,
    living_playlists,
)
from emergify_contracts.model import PortableModel
from emergify_contracts.song import Song
from emergify_recommender.catalog import Catalog
from emergify_recommender.config import Settings
from emergify_recommender.index import SongIndex
from emergify_recommender.living import LivingPlaylists, Playlist, distances, seed_queries

SIZE = 5
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def new_id(n: int) -> str:
    return f"LivingNew{n:013d}"


def near_copy(song: Song, n: int, **changes: Any) -> Song:
    """A different song (own id, title, artist) that sounds almost exactly like ``song``."""
    values: dict[str, Any] = {
        "track_id": new_id(n),
        "name": f"Echo {n}",
        "artists": [f"Echo Artist {n}"],
        "artist_ids": [f"EchoArtist{n:012d}"],
        "popularity": 10,
        "energy": min(1.0, song.energy + 0.001),
    }
    values.update(changes)
    return song.model_copy(update=values)


def load_index(engine: sa.Engine) -> tuple[Catalog, SongIndex]:
    catalog = Catalog(engine)
    return catalog, asyncio.run(catalog.reload("test"))


def subscribe(
    engine: sa.Engine,
    index: SongIndex,
    listener_id: str,
    seed: str,
    size: int = SIZE,
    max_popularity: int | None = None,
    max_per_artist: int = 10,
) -> tuple[str, dict[str, float]]:
    """A living playlist holding the ``size`` nearest catalog songs to ``seed``, written as
    the spotify-gateway writes a new subscription; (playlist id, its items)."""
    playlist_id = str(uuid.uuid4())
    row: dict[str, Any] = {
        "playlist_id": playlist_id,
        "listener_id": listener_id,
        "spotify_playlist_id": None,
        "name": "living",
        "size": size,
        "max_popularity": max_popularity,
        "max_per_artist": max_per_artist,
        "seeds": [{"track_id": seed, "weight": 1.0, "why": "seed"}],
        "taste": False,
        "version": 1,
        "synced_version": 1,
        "songs_added": 0,
        "created_at": NOW,
    }
    playlist = Playlist(
        playlist_id, listener_id, size, max_popularity, max_per_artist, [(seed, 1.0)], {}, 1
    )
    queries, weights = seed_queries(index, playlist)
    d = distances(index, queries, weights, np.arange(len(index)))
    d[index.position(seed)] = np.inf
    nearest = np.argsort(d, kind="stable")[:size]
    items = {index.track_id(int(r)): float(d[r]) for r in nearest}
    with engine.begin() as conn:
        conn.execute(living_playlists.insert().values(**row))
        conn.execute(
            living_playlist_items.insert(),
            [
                {"playlist_id": playlist_id, "track_id": t, "distance": v, "added_at": NOW}
                for t, v in items.items()
            ],
        )
    return playlist_id, items


def stream_in(
    catalog_db: Any,
    rec: Any,
    catalog: Catalog,
    songs: list[Song],
    version: int,
    listed: bool = True,
):
    """Write ``songs`` as micro-batch ``version`` and apply its change to the catalog (not
    ``listed``: announced as a batch too big to name its songs)."""
    catalog_db.insert_songs([rec.song_row(s, version) for s in songs])
    ids = [s.track_id for s in songs]
    change = CatalogChange.of_batch(version, ids, [], max_names=len(ids) if listed else 0, songs=0)
    assert change.listed is listed
    return change, asyncio.run(catalog.apply_change(change))


def feedback(engine: sa.Engine, listener_id: str, track_id: str, signal: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            listener_feedback.insert().values(
                listener_id=listener_id,
                event_id=uuid.uuid4().hex,
                track_id=track_id,
                signal=signal,
                at=datetime.now(UTC),
                table_version=1,
            )
        )


def living_for(settings: Settings, engine: sa.Engine) -> LivingPlaylists:
    living = LivingPlaylists(settings, engine)
    living.reload()
    return living


def seeded(catalog_db: Any, rec: Any, sample_songs: list[Song], model: PortableModel):
    catalog_db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:3000]])
    catalog_db.insert_model(model)
    return load_index(catalog_db.engine)


def one_subscriber(catalog_db: Any, rec: Any, sample_songs: list[Song], model: PortableModel):
    """3,000 sample songs, one listener's living playlist seeded with song 10, and the
    matcher: (catalog, index, living, playlist id, its items)."""
    catalog, index = seeded(catalog_db, rec, sample_songs, model)
    playlist_id, before = subscribe(
        catalog_db.engine, index, "spotify:a", sample_songs[10].track_id
    )
    living = living_for(rec.recommender_settings(catalog_db.url, "127.0.0.1:9"), catalog_db.engine)
    return catalog, index, living, playlist_id, before


def test_a_near_copy_of_a_seed_enters_and_the_furthest_song_leaves(
    catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel
) -> None:
    catalog, index, living, playlist_id, before = one_subscriber(
        catalog_db, rec, sample_songs, sample_model
    )
    engine, seed = catalog_db.engine, sample_songs[10]

    copy = near_copy(seed, 1)
    change, index = stream_in(catalog_db, rec, catalog, [copy], 2)
    result = living.apply_catalog_change(change, index)

    assert result.changes == [LivingPlaylistChange(playlist_id=playlist_id, version=2)]
    after = desired(engine, playlist_id)
    furthest = max(before, key=before.__getitem__)
    assert set(after) == set(before) - {furthest} | {copy.track_id}
    assert after[copy.track_id] < min(before.values())  # it sounds most like the seed
    row = header(engine, playlist_id)
    assert (row.version, row.synced_version, row.songs_added) == (2, 1, 1)

    # The same change again (a replay, or a second replica): nothing is written twice.
    again = living.apply_catalog_change(change, index)
    assert again.already_applied and again.changes == []
    fresh = living_for(rec.recommender_settings(catalog_db.url, "127.0.0.1:9"), engine)
    assert fresh.apply_catalog_change(change, index).already_applied
    assert desired(engine, playlist_id) == after
    assert header(engine, playlist_id).version == 2
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(living_batches)).scalar() == 1

    # After a rebuild of the feature table, versions restart: a later change reusing version 2
    # is new (committed after the marker), so it is matched.
    second = near_copy(seed, 2, energy=min(1.0, seed.energy + 0.002))
    catalog_db.insert_songs([rec.song_row(second, 2)])
    reused = CatalogChange(table_version=2, upserted_ids=[second.track_id], songs=0)
    index = asyncio.run(catalog.apply_change(reused))
    assert fresh.apply_catalog_change(reused, index).changes == [
        LivingPlaylistChange(playlist_id=playlist_id, version=3)
    ]
    assert second.track_id in desired(engine, playlist_id)
    assert living.apply_catalog_change(reused, index).already_applied


def test_a_batch_announced_without_its_ids_is_matched_by_its_table_version(
    catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel
) -> None:
    catalog, index, living, playlist_id, before = one_subscriber(
        catalog_db, rec, sample_songs, sample_model
    )
    engine, seed = catalog_db.engine, sample_songs[10]

    copy = near_copy(seed, 1)
    others = sample_songs[3000:3400]  # far from the seed, in the same batch
    change, index = stream_in(catalog_db, rec, catalog, [copy, *others], 2, listed=False)
    assert change.upserted_ids == [] and change.upserted == len(others) + 1
    assert len(index) == 3000 + len(others) + 1  # the catalog read the batch by version
    assert index.position(copy.track_id) is not None

    result = living.apply_catalog_change(change, index)
    assert result.songs == len(others) + 1
    assert result.changes == [LivingPlaylistChange(playlist_id=playlist_id, version=2)]
    after = desired(engine, playlist_id)
    assert copy.track_id in after and len(after) == len(before)


def test_rules_keep_popular_songs_and_banned_artists_out(
    catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel
) -> None:
    catalog, index = seeded(catalog_db, rec, sample_songs, sample_model)
    engine = catalog_db.engine
    seed, banned_song = sample_songs[10], sample_songs[20]
    capped, capped_items = subscribe(engine, index, "spotify:a", seed.track_id, max_popularity=30)
    banning, banning_items = subscribe(engine, index, "spotify:b", seed.track_id)
    feedback(engine, "spotify:b", banned_song.track_id, "ban_artist")
    living = living_for(rec.recommender_settings(catalog_db.url, "127.0.0.1:9"), engine)

    popular = near_copy(seed, 1, popularity=80)
    by_banned = near_copy(
        seed, 2, artists=banned_song.artists, artist_ids=banned_song.artist_ids, popularity=5
    )
    change, index = stream_in(catalog_db, rec, catalog, [popular, by_banned], 2)
    result = living.apply_catalog_change(change, index)

    after_capped, after_banning = desired(engine, capped), desired(engine, banning)
    assert popular.track_id not in after_capped and popular.track_id in after_banning
    assert by_banned.track_id in after_capped and by_banned.track_id not in after_banning
    assert len(after_capped) == len(after_banning) == SIZE
    assert {c.playlist_id for c in result.changes} == {capped, banning}
    assert set(after_capped) != set(capped_items) and set(after_banning) != set(banning_items)


def test_several_listeners_playlists_change_in_one_batch_and_a_dislike_removes_at_once(
    catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel
) -> None:
    catalog, index = seeded(catalog_db, rec, sample_songs, sample_model)
    engine = catalog_db.engine
    seeds = [sample_songs[10], sample_songs[500], sample_songs[1500]]
    ids = [subscribe(engine, index, f"spotify:l{i}", s.track_id)[0] for i, s in enumerate(seeds)]
    untouched, untouched_items = subscribe(
        engine, index, "spotify:other", sample_songs[2500].track_id
    )
    living = living_for(rec.recommender_settings(catalog_db.url, "127.0.0.1:9"), engine)

    copies = [near_copy(s, i) for i, s in enumerate(seeds)]
    change, index = stream_in(catalog_db, rec, catalog, copies, 2)
    result = living.apply_catalog_change(change, index)
    assert sorted(c.playlist_id for c in result.changes) == sorted(ids)
    for playlist_id, copy in zip(ids, copies, strict=True):
        assert copy.track_id in desired(engine, playlist_id)
        assert header(engine, playlist_id).version == 2
    assert desired(engine, untouched) == untouched_items

    # Listener l0 dislikes the song that just entered: it leaves their playlist only.
    feedback(engine, "spotify:l0", copies[0].track_id, "dislike")
    changes = living.apply_listener_change(["spotify:l0", "spotify:nobody"], index)
    assert changes == [LivingPlaylistChange(playlist_id=ids[0], version=3)]
    assert copies[0].track_id not in desired(engine, ids[0])
    assert len(desired(engine, ids[0])) == SIZE - 1
    assert header(engine, ids[0]).version == 3
    assert copies[1].track_id in desired(engine, ids[1])
    # Applying the same listener change again removes nothing and bumps nothing.
    assert living.apply_listener_change(["spotify:l0"], index) == []
    assert header(engine, ids[0]).version == 3

    # The disliked song streams in again (re-uploaded) beside another near-copy: the free
    # slot goes to the other one; the disliked song never comes back.
    catalog_db.update_song(copies[0].track_id, table_version=3)
    catalog_db.insert_songs([rec.song_row(near_copy(seeds[0], 9), 3)])
    change3 = CatalogChange(table_version=3, upserted_ids=[copies[0].track_id, new_id(9)], songs=0)
    index = asyncio.run(catalog.apply_change(change3))
    living.apply_catalog_change(change3, index)
    assert copies[0].track_id not in desired(engine, ids[0])
    assert new_id(9) in desired(engine, ids[0])


StartApp = Callable[..., TestClient]


def test_the_app_matches_catalog_changes_and_applies_feedback_through_the_broker(
    catalog_db: Any,
    broker: EmbeddedBroker,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    catalog_db.insert_songs([rec.song_row(s, 1) for s in sample_songs[:3000]])
    catalog_db.insert_model(sample_model)
    engine = catalog_db.engine
    _, index = load_index(engine)
    seed = sample_songs[10]
    playlist_id, before = subscribe(engine, index, "spotify:a", seed.track_id)
    suffix = uuid.uuid4().hex[:8]
    settings = rec.recommender_settings(
        catalog_db.url,
        broker.bootstrap,
        living_playlists_topic=f"t{suffix}.living",
        listener_changes_topic=f"t{suffix}.listener-changes",
    )
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(
        lambda: client.get("/health").json().get("change_feed") == "connected",
        what="the change feed to connect",
    )
    living: LivingPlaylists = client.app.state.living  # type: ignore[attr-defined]
    wait_for(lambda: living.state == "connected", what="the living-playlist feed to connect")
    assert playlist_id in living.playlists

    copy = near_copy(seed, 1)
    catalog_db.insert_songs([rec.song_row(copy, 2)])
    rec.publish(
        broker.bootstrap,
        settings.catalog_changes_topic,
        "2",
        CatalogChange(table_version=2, upserted_ids=[copy.track_id], songs=3001),
    )
    wait_for(lambda: copy.track_id in desired(engine, playlist_id), what="the copy to enter")
    assert len(desired(engine, playlist_id)) == SIZE
    announced = consume(broker.bootstrap, settings.living_playlists_topic, expected=1)
    assert [LivingPlaylistChange.model_validate_json(r.value) for r in announced] == [
        LivingPlaylistChange(playlist_id=playlist_id, version=2)
    ]

    feedback(engine, "spotify:a", copy.track_id, "dislike")
    rec.publish(
        broker.bootstrap,
        settings.listener_changes_topic,
        "spotify:a",
        ListenerChange(version=1, listener_ids=["spotify:a"]),
    )
    wait_for(lambda: copy.track_id not in desired(engine, playlist_id), what="the dislike")
    assert header(engine, playlist_id).version == 3
    announced = consume(broker.bootstrap, settings.living_playlists_topic, expected=2)
    assert [LivingPlaylistChange.model_validate_json(r.value).version for r in announced] == [
        2,
        3,
    ]
    assert set(desired(engine, playlist_id)) == set(before) - {max(before, key=before.get)}


def test_two_replicas_matching_the_same_change_at_once_write_it_once(
    catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    catalog, index = seeded(catalog_db, rec, sample_songs, sample_model)
    engine = catalog_db.engine
    seed = sample_songs[10]
    playlist_id, _ = subscribe(engine, index, "spotify:a", seed.track_id)
    settings = rec.recommender_settings(catalog_db.url, "127.0.0.1:9")
    replicas = [living_for(settings, engine), living_for(settings, engine)]
    copy = near_copy(seed, 1)
    change, index = stream_in(catalog_db, rec, catalog, [copy], 2)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: r.apply_catalog_change(change, index), replicas))

    assert sorted(r.already_applied for r in results) == [False, True]
    assert sum(len(r.changes) for r in results) == 1
    row = header(engine, playlist_id)
    assert (row.version, row.songs_added) == (2, 1)
    assert copy.track_id in desired(engine, playlist_id)
