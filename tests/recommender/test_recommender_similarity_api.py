"""The blended similarity through the API, over a real database holding the sample catalog,
a model stored with its similarity setting and the artist profiles the batch layer writes:
the model's weight by default, a request's own weight, 422 for a bad one, explanations
(with the genres a song shares with its seed), GET /api/v1/model, and a song streamed in
with a new artist (``artists_changed``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from ranking_reference import brute_force
from testkit import wait_for

from emergify_contracts.artist_profiles import (
    ArtistProfiles,
    artist_keys,
    artist_profiles,
    song_artist_vectors,
)
from emergify_contracts.events import CatalogChange
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES, Song
from emergify_contracts.tables import PROFILE_SUM_COLUMNS
from emergify_contracts.tables import artist_profiles as profiles_table
from emergify_recommender.ranking import query_vector

StartApp = Callable[..., TestClient]
SIMILARITY = {"artist_weight": 2.0, "multi_artist_rule": "weighted"}


def standardized(model: PortableModel, songs: list[Song]) -> np.ndarray:
    return model.standardize(np.array([[getattr(s, f) for f in AUDIO_FEATURES] for s in songs]))


def keys_of(songs: list[Song]) -> list[tuple[str, ...]]:
    return [artist_keys(s.artists, s.artist_ids) for s in songs]


def write_profiles(db: Any, version: int, profiles: ArtistProfiles, table_version: int) -> None:
    """Upsert ``artist_profiles`` rows the way the batch and speed layers do."""
    now = datetime.now(UTC)
    with db.engine.begin() as conn:
        conn.execute(
            profiles_table.delete().where(
                (profiles_table.c.model_version == version)
                & profiles_table.c.artist_key.in_(list(profiles.keys))
            )
        )
        conn.execute(
            profiles_table.insert(),
            [
                {
                    "model_version": version,
                    "artist_key": key,
                    "name": key,
                    "song_count": int(profiles.counts[i]),
                    "genres": [],
                    "table_version": table_version,
                    "updated_at": now,
                    **dict(zip(PROFILE_SUM_COLUMNS, profiles.sums[i].tolist(), strict=True)),
                }
                for i, key in enumerate(profiles.keys)
            ],
        )


def recommend(client: TestClient, **body: Any) -> dict[str, Any]:
    response = client.post("/api/v1/recommendations", json={"max_popularity": 100, **body})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def blended_app(
    catalog_db: Any,
    broker: Any,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> tuple[TestClient, Any, Any]:
    songs = sample_songs[:4000]
    catalog_db.insert_songs([rec.song_row(s, 1) for s in songs])
    catalog_db.insert_model(sample_model, {"similarity": SIMILARITY})
    profiles = artist_profiles(standardized(sample_model, songs), keys_of(songs))
    write_profiles(catalog_db, sample_model.version, profiles, 1)
    settings = rec.recommender_settings(catalog_db.url, broker.bootstrap)
    rec.ensure_topics(settings)
    client = app_client(settings)
    wait_for(
        lambda: client.get("/health").json().get("change_feed") == "connected",
        what="the change feed to connect",
    )
    return client, catalog_db, settings


def test_the_model_weight_ranks_by_default_and_a_request_overrides_it(
    blended_app: tuple[TestClient, Any, Any], sample_songs: list[Song], sample_model: PortableModel
) -> None:
    client, _, _ = blended_app
    model = client.get("/api/v1/model").json()
    assert model["similarity"] == SIMILARITY
    index = client.app.state.catalog.require()  # type: ignore[attr-defined]
    assert index.blended and index.artist_weight == 2.0
    # The loaded artist vectors are the profiles' (every credited artist counts).
    songs = sample_songs[:4000]
    z = standardized(sample_model, songs)
    expected = song_artist_vectors(
        artist_profiles(z, keys_of(songs)), keys_of(songs), "weighted", z
    )
    rows = np.array([index.position(s.track_id) for s in songs])
    np.testing.assert_allclose(index.a_of(rows), expected, rtol=1e-12, atol=1e-12)

    seed = songs[17].track_id
    row = index.position(seed)
    answers = {}
    for weight in (None, 0.0, 2.0, 7.5):
        body: dict[str, Any] = {"seeds": [seed], "limit": 25}
        if weight is not None:
            body["similarity"] = {"artist_weight": weight}
        got = recommend(client, **body)
        used = 2.0 if weight is None else weight
        assert got["similarity"] == {"artist_weight": used, "multi_artist_rule": "weighted"}
        exact = brute_force(index, query_vector(index, [row]), 25, seeds=[row], artist_weight=used)
        assert [i["track_id"] for i in got["items"]] == [index.track_id(r.row) for r in exact]
        assert [i["distance"] for i in got["items"]] == [r.distance for r in exact]
        answers[weight] = [i["track_id"] for i in got["items"]]
        for item in got["items"]:
            reasons = item["explanation"]["reasons"]
            assert reasons[0] in ("own sound", "artist's sound")
            assert ("artist's sound" in reasons) == (used > 0)
    assert answers[None] == answers[2.0] and answers[0.0] != answers[2.0]
    # Some pick of the blend is close mainly through its artist's sound.
    assert any(
        i["explanation"]["reasons"][0] == "artist's sound"
        for i in recommend(client, seeds=[seed], limit=50)["items"]
    )


@pytest.mark.parametrize(
    "similarity",
    [{"artist_weight": -1}, {"artist_weight": "much"}, {"artist_weight": 1, "rule": "x"}, {}],
)
def test_a_bad_similarity_override_is_a_422_problem(
    blended_app: tuple[TestClient, Any, Any], sample_songs: list[Song], similarity: Any
) -> None:
    client, _, _ = blended_app
    response = client.post(
        "/api/v1/recommendations",
        json={"seeds": [sample_songs[0].track_id], "similarity": similarity},
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_a_song_streamed_in_with_a_new_artist_is_recommendable_with_its_profile(
    blended_app: tuple[TestClient, Any, Any],
    rec: Any,
    broker: Any,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    client, db, settings = blended_app
    old = sample_songs[:4000]
    known = old[5].artists[0]
    newcomer = sample_songs[4001].model_copy(
        update={"artists": ["Never Heard Before", known], "artist_ids": []}
    )
    if old[5].artist_ids:  # keys are ids when the catalog has them: credit the known one so
        newcomer = newcomer.model_copy(  # the song shares a profile with old songs
            update={"artist_ids": ["0" * 21 + "Z", old[5].artist_ids[0]]}
        )
    songs = [*old, newcomer]
    # The speed layer's micro-batch: the song and its artists' profile rows, one commit.
    db.insert_songs([rec.song_row(newcomer, 2)])
    profiles = artist_profiles(standardized(sample_model, songs), keys_of(songs))
    touched = keys_of([newcomer])[0]
    at = profiles.position()
    changed = ArtistProfiles(
        touched, profiles.sums[[at[k] for k in touched]], profiles.counts[[at[k] for k in touched]]
    )
    write_profiles(db, sample_model.version, changed, 2)
    rec.publish(
        broker.bootstrap,
        settings.catalog_changes_topic,
        "2",
        CatalogChange(
            table_version=2,
            upserted_ids=[newcomer.track_id],
            songs=len(songs),
            artists_changed=sorted(touched),
            profiles_model_version=sample_model.version,
        ),
    )
    wait_for(
        lambda: client.get(f"/api/v1/songs/{newcomer.track_id}").status_code == 200,
        what="the new song",
    )
    index = client.app.state.catalog.require()  # type: ignore[attr-defined]
    row = index.position(newcomer.track_id)
    z = standardized(sample_model, songs)
    expected = song_artist_vectors(profiles, keys_of(songs), "weighted", z)
    np.testing.assert_allclose(index.a_of([row])[0], expected[-1], rtol=1e-12, atol=1e-12)
    # The known artist's other songs moved with its profile too.
    other = index.position(old[5].track_id)
    np.testing.assert_allclose(index.a_of([other])[0], expected[5], rtol=1e-12, atol=1e-12)
    got = recommend(client, seeds=[newcomer.track_id], limit=20)
    exact = brute_force(index, query_vector(index, [row]), 20, seeds=[row])
    assert [i["track_id"] for i in got["items"]] == [index.track_id(r.row) for r in exact]
    # From its own features (a = z) it is found at exactly its blended distance.
    features = {f: getattr(newcomer, f) for f in AUDIO_FEATURES}
    own = 2.0 * float(np.abs(expected[-1] - z[-1]).sum())
    near = recommend(
        client, seed_features=features, limit=500, within_distance=own + 1e-9, max_per_artist=50
    )
    found = {i["track_id"]: i["distance"] for i in near["items"]}
    assert found[newcomer.track_id] == pytest.approx(own, rel=1e-12, abs=1e-12)


# --- genres: shown and explained, never ranked on ----------------------------------------

GENRES = ["indie pop", "lo-fi", "bedroom soul", "shoegaze", "dream pop", "indie r&b"]


def with_artist_genres(songs: list[Song]) -> list[Song]:
    """``songs`` with genres per first artist, as Exportify gives them: every fifth artist
    has none, the others two of :data:`GENRES` (some spelt in capitals)."""
    artist_no: dict[str, int] = {}
    out = []
    for song in songs:
        n = artist_no.setdefault(song.artists[0], len(artist_no))
        tags = list(dict.fromkeys([GENRES[n % 6], GENRES[(n // 6) % 6]]))
        if n % 7 == 3:
            tags[0] = tags[0].upper()
        out.append(song.model_copy(update={"genres": [] if n % 5 == 0 else tags}))
    return out


def start_catalog(
    db: Any, broker: Any, rec: Any, app_client: StartApp, songs: list[Song], model: PortableModel
) -> TestClient:
    """An app over ``songs``, ``model`` with the blended similarity and its profiles."""
    db.insert_songs([rec.song_row(s, 1) for s in songs])
    db.insert_model(model, {"similarity": SIMILARITY})
    profiles = artist_profiles(standardized(model, songs), keys_of(songs))
    write_profiles(db, model.version, profiles, 1)
    settings = rec.recommender_settings(db.url, broker.bootstrap)
    rec.ensure_topics(settings)
    return app_client(settings)


def test_items_carry_their_genres_and_those_shared_with_their_nearest_seed(
    catalog_db: Any,
    broker: Any,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    songs = with_artist_genres(sample_songs[:600])
    genres = {s.track_id: s.genres for s in songs}
    client = start_catalog(catalog_db, broker, rec, app_client, songs, sample_model)
    seeds = [s.track_id for s in songs if s.genres][:: len(songs) // 4][:2]
    got = recommend(client, seeds=seeds, limit=60, max_per_artist=50)
    assert got["count"] == 60
    shared_count = 0
    for item in got["items"]:
        assert item["genres"] == genres[item["track_id"]]
        theirs = {g.casefold() for g in genres[item["seed_track_id"]]}
        shared = [g for g in item["genres"] if g.casefold() in theirs]
        why = item["explanation"]
        assert why["shared_genres"] == shared
        assert ("shared genres" in why["reasons"]) == bool(shared)
        if shared:
            assert why["reasons"][-1] == "shared genres"
            shared_count += 1
        assert set(why["reasons"][:2]) == {"own sound", "artist's sound"}
    assert 0 < shared_count < got["count"]  # both cases are checked
    assert any(g != g.lower() for i in got["items"] for g in i["explanation"]["shared_genres"])
    # Genres are not part of the distance: the ranking is the brute force's on sound alone.
    index = client.app.state.catalog.require()  # type: ignore[attr-defined]
    rows = [index.position(s) for s in seeds]
    exact = brute_force(index, query_vector(index, rows), 60, seeds=rows, max_per_artist=50)
    assert [(i["track_id"], i["distance"]) for i in got["items"]] == [
        (index.track_id(r.row), r.distance) for r in exact
    ]
    # A feature vector has no genres to share; the songs still show theirs.
    features = {f: getattr(songs[0], f) for f in AUDIO_FEATURES}
    near = recommend(client, seed_features=features, limit=30)
    assert [i["genres"] for i in near["items"]] == [genres[i["track_id"]] for i in near["items"]]
    assert any(i["genres"] for i in near["items"])
    assert all(i["explanation"]["shared_genres"] == [] for i in near["items"])
    assert all("shared genres" not in i["explanation"]["reasons"] for i in near["items"])


def test_a_catalog_without_genres_shows_none_and_shares_none(
    catalog_db: Any,
    broker: Any,
    rec: Any,
    app_client: StartApp,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> None:
    songs = [s.model_copy(update={"genres": []}) for s in sample_songs[:600]]
    client = start_catalog(catalog_db, broker, rec, app_client, songs, sample_model)
    got = recommend(client, seeds=[songs[10].track_id, songs[300].track_id], limit=40)
    assert got["count"] == 40
    for item in got["items"]:
        assert item["genres"] == [] and item["explanation"]["shared_genres"] == []
        assert "shared genres" not in item["explanation"]["reasons"]
