"""The recommender's public API over a real database (SQLite and PostgreSQL) holding the
sample catalog and a model, with the app's lifespan running against the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from testkit import INTERNAL_HEADERS, wait_for

from emergify_cli.broker import free_port, wait_for_port
from emergify_contracts.model import PortableModel
from emergify_contracts.settings import EmergifySettings
from emergify_contracts.song import AUDIO_FEATURES, Song
from emergify_contracts.tables import make_engine
from emergify_recommender.api.routes.recommendations import genres_in
from emergify_recommender.catalog import Catalog
from emergify_recommender.main import create_app

PROBLEM = "application/problem+json"
BATCH_AT = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Served:
    client: TestClient
    songs: list[Song]
    model: PortableModel


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    broker: Any,
    rec: Any,
    sample_songs: list[Song],
    sample_model: PortableModel,
) -> Iterator[Served]:
    """One app per backend over the whole sample catalog, model v1 and one micro-batch."""
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('recommender') / 'emergify.db'}"
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
            yield Served(client=client, songs=sample_songs, model=sample_model)
    finally:
        db.engine.dispose()
        if pg_name:
            rec.drop_pg_database(pg_name)


def assert_problem(response: Any, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["type"]
    for word in words:
        assert word in body["detail"], body["detail"]
    return body


def test_health_reports_the_loaded_catalog(served: Served) -> None:
    response = served.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["service"] == "recommender"
    assert body["songs"] == len(served.songs)
    assert body["model_version"] == 1


def test_recommendations_for_a_seed_song(served: Served) -> None:
    seed = served.songs[42]
    response = served.client.post("/api/v1/recommendations", json={"seeds": [seed.track_id]})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == 1
    assert body["count"] == len(body["items"]) == 30
    assert body["seed"]["track_ids"] == [seed.track_id]
    assert body["seed"]["features"] == pytest.approx({f: getattr(seed, f) for f in AUDIO_FEATURES})
    seed_cluster = served.client.get(f"/api/v1/songs/{seed.track_id}").json()["cluster"]
    assert body["seed"]["cluster"] == seed_cluster
    distances = [item["distance"] for item in body["items"]]
    assert distances == sorted(distances)
    assert seed.track_id not in {item["track_id"] for item in body["items"]}
    first = body["items"][0]
    assert set(first) >= {
        "track_id",
        "name",
        "artists",
        "album",
        "popularity",
        "distance",
        "cluster",
        "features",
        "spotify_url",
    }
    assert first["spotify_url"] == f"https://open.spotify.com/track/{first['track_id']}"
    assert set(first["features"]) == set(AUDIO_FEATURES)


def test_recommendations_honour_the_playlist_rules(served: Served) -> None:
    seed = served.songs[7].track_id
    plain = served.client.post(
        "/api/v1/recommendations", json={"seeds": [seed], "limit": 10}
    ).json()
    excluded = [item["track_id"] for item in plain["items"][:3]]

    body = served.client.post(
        "/api/v1/recommendations",
        json={
            "seeds": [seed],
            "limit": 50,
            "max_popularity": 20,
            "max_per_artist": 1,
            "exclude_ids": excluded,
        },
    ).json()

    assert body["count"] == 50
    assert all(item["popularity"] is None or item["popularity"] <= 20 for item in body["items"])
    artists = Counter(a.casefold() for item in body["items"] for a in item["artists"])
    assert max(artists.values()) == 1
    assert not {item["track_id"] for item in body["items"]} & set(excluded)


def test_the_emerging_threshold_setting_is_the_default_and_a_request_can_lift_it(
    served: Served,
) -> None:
    threshold = EmergifySettings(_env_file=None).emerging_max_popularity
    popular = max(served.songs, key=lambda s: s.popularity or 0)
    assert (popular.popularity or 0) > threshold  # the sample has songs above it
    features = {f: getattr(popular, f) for f in AUDIO_FEATURES}
    ask = {"seed_features": features, "limit": 100, "max_per_artist": 50}

    default = served.client.post("/api/v1/recommendations", json=ask).json()
    lifted = served.client.post(
        "/api/v1/recommendations", json={**ask, "max_popularity": 100}
    ).json()

    assert all((i["popularity"] or 0) <= threshold for i in default["items"])
    assert popular.track_id not in {i["track_id"] for i in default["items"]}
    assert popular.track_id in {i["track_id"] for i in lifted["items"]}


def test_recommendations_for_a_feature_vector(served: Served) -> None:
    song = served.songs[100]
    features = {f: getattr(song, f) for f in AUDIO_FEATURES}

    response = served.client.post(
        "/api/v1/recommendations", json={"seed_features": features, "limit": 5}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["seed"]["track_ids"] == []
    assert body["count"] == 5
    assert body["items"][0]["track_id"] == song.track_id
    assert body["items"][0]["distance"] == pytest.approx(0.0, abs=1e-9)


def test_recommendations_for_several_seeds(served: Served) -> None:
    seeds = [served.songs[1].track_id, served.songs[2].track_id]
    body = served.client.post("/api/v1/recommendations", json={"seeds": seeds}).json()
    assert body["seed"]["track_ids"] == seeds
    mean = {
        f: (getattr(served.songs[1], f) + getattr(served.songs[2], f)) / 2 for f in AUDIO_FEATURES
    }
    assert body["seed"]["features"] == pytest.approx(mean)
    assert not set(seeds) & {item["track_id"] for item in body["items"]}


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ["exactly one of `seeds`"]),
        (
            {
                "seeds": ["5P6nbeGMqnAGwqt9rrraaQ"],
                "seed_features": dict.fromkeys(AUDIO_FEATURES, 0),
            },
            ["exactly one of `seeds`"],
        ),
        ({"seeds": ["5P6nbeGMqnAGwqt9rrraaQ"], "limit": 0}, ["limit"]),
        ({"seeds": ["5P6nbeGMqnAGwqt9rrraaQ"], "limit": 101}, ["limit", "100"]),
        ({"seeds": ["not-an-id"]}, ["'not-an-id' is not a 22-character base62 Spotify id"]),
        ({"seeds": ["5P6nbeGMqnAGwqt9rrraaQ"], "max_popularity": 101}, ["max_popularity"]),
        ({"seeds": ["5P6nbeGMqnAGwqt9rrraaQ"], "seed": []}, ["seed"]),
        (
            {"seed_features": {**dict.fromkeys(AUDIO_FEATURES, 0.5), "danceability": 1.7}},
            ["danceability"],
        ),
    ],
)
def test_invalid_recommendation_requests_are_422_problems(
    served: Served, body: dict[str, Any], words: list[str]
) -> None:
    response = served.client.post("/api/v1/recommendations", json=body)
    problem = assert_problem(response, 422, *words)
    assert problem["errors"]


def test_an_unknown_seed_is_a_404_problem_naming_it(served: Served) -> None:
    unknown = "0000000000000000000000"
    response = served.client.post(
        "/api/v1/recommendations", json={"seeds": [served.songs[0].track_id, unknown]}
    )
    problem = assert_problem(response, 404, unknown, "not in the catalog yet")
    assert problem["missing_ids"] == [unknown]


def test_get_song(served: Served) -> None:
    song = served.songs[5]
    response = served.client.get(f"/api/v1/songs/{song.track_id}")
    assert response.status_code == 200
    body = response.json()
    for field, value in song.model_dump().items():
        assert body[field] == (pytest.approx(value) if isinstance(value, float) else value)
    assert 0 <= body["cluster"] < served.model.k
    assert body["model_version"] == 1
    assert body["table_version"] == 1
    assert body["updated_at"]

    assert_problem(
        served.client.get("/api/v1/songs/0000000000000000000000"), 404, "not in the catalog yet"
    )
    assert_problem(
        served.client.get("/api/v1/songs/too-short"), 422, "not a 22-character base62 Spotify id"
    )


def test_search_by_track_or_artist_name(served: Served) -> None:
    song = next(s for s in served.songs if len(s.artists[0]) >= 6)
    fragment = song.artists[0][1:5].upper()

    body = served.client.get("/api/v1/songs", params={"q": fragment, "limit": 100}).json()

    assert body["total"] >= 1
    assert song.track_id in {item["track_id"] for item in body["items"]} or body["total"] > 100
    for item in body["items"]:
        haystack = (item["name"] + " " + " ".join(item["artists"])).casefold()
        assert fragment.casefold() in haystack
    limited = served.client.get("/api/v1/songs", params={"q": "a", "limit": 3}).json()
    assert limited["count"] == 3 and limited["total"] > 3
    assert_problem(served.client.get("/api/v1/songs"), 422, "q")
    assert_problem(served.client.get("/api/v1/songs", params={"q": ""}), 422, "q")
    assert_problem(
        served.client.get("/api/v1/songs", params={"q": "a", "limit": 101}), 422, "limit"
    )


def test_catalog_status(served: Served) -> None:
    body = served.client.get("/api/v1/catalog").json()
    assert body["songs"] == len(served.songs)
    assert body["table_version"] == 1
    assert body["model_version"] == 1
    assert body["model_trained_at"]
    assert body["last_update"]
    assert datetime.fromisoformat(body["freshness"]["last_batch_at"]) == BATCH_AT
    assert body["freshness"]["seconds_since_last_batch"] > 0
    assert body["speed_layer"] is None, "the stream processor does not run in this test"


def test_model(served: Served) -> None:
    body = served.client.get("/api/v1/model").json()
    assert body["version"] == 1
    assert body["k"] == served.model.k
    assert body["silhouette"] == pytest.approx(served.model.silhouette)
    assert body["features"] == list(AUDIO_FEATURES)
    assert body["songs"] == served.model.songs
    assert body["metrics"]
    assert len(body["explained_variance"]) == len(served.model.components[0])


def test_clusters_are_a_deterministic_sample_in_the_pca_plane(served: Served) -> None:
    first = served.client.get("/api/v1/clusters", params={"sample": 500}).json()
    again = served.client.get("/api/v1/clusters", params={"sample": 500}).json()

    assert first == again
    assert first["model_version"] == 1
    assert first["songs"] == len(served.songs)
    assert len(first["points"]) == 500
    assert len({p["track_id"] for p in first["points"]}) == 500
    assert {p["cluster"] for p in first["points"]} <= set(range(served.model.k))
    assert [c["cluster"] for c in first["centroids"]] == list(range(served.model.k))
    assert first["centroids"][0]["x"] == pytest.approx(served.model.centroids[0][0])
    everything = served.client.get("/api/v1/clusters", params={"sample": 20_000}).json()
    assert len(everything["points"]) == len(served.songs)
    assert_problem(served.client.get("/api/v1/clusters", params={"sample": 0}), 422, "sample")
    assert_problem(served.client.get("/api/v1/clusters", params={"sample": 20_001}), 422, "sample")


def test_openapi_has_public_paths_tags_and_operation_ids(served: Served) -> None:
    spec = served.client.get("/openapi.json").json()
    assert {
        "/health",
        "/api/v1/recommendations",
        "/api/v1/songs/{track_id}",
        "/api/v1/songs",
        "/api/v1/catalog",
        "/api/v1/model",
        "/api/v1/clusters",
    } <= set(spec["paths"])
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            assert op["tags"], f"{method} {path} has no tag"
            assert op["operationId"].startswith(f"{op['tags'][0]}-")
            assert "200" in op["responses"]


def test_an_empty_database_serves_an_empty_catalog(tmp_path: Path, rec: Any) -> None:
    # No tables at all: the stream processor has not created them yet.
    settings = rec.recommender_settings(f"sqlite:///{tmp_path / 'empty.db'}", "127.0.0.1:9")
    with TestClient(create_app(settings), headers=INTERNAL_HEADERS) as client:
        health = client.get("/health")
        assert health.status_code == 200
        assert health.json()["songs"] == 0
        assert health.json()["model_version"] is None
        assert_problem(client.get("/api/v1/model"), 404, "no model trained yet")
        assert_problem(client.get("/api/v1/clusters"), 404, "no model trained yet")
        features = dict.fromkeys(AUDIO_FEATURES, 0.5)
        empty = client.post("/api/v1/recommendations", json={"seed_features": features})
        assert empty.status_code == 200
        assert empty.json()["items"] == [] and empty.json()["model_version"] is None
        assert client.get("/api/v1/catalog").json()["songs"] == 0


def test_an_unreachable_database_is_503_until_it_answers(rec: Any) -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/emergify_no_such_database"
    settings = rec.recommender_settings(url, "127.0.0.1:9")
    with TestClient(create_app(settings), headers=INTERNAL_HEADERS) as client:
        health = client.get("/health")
        assert health.status_code == 503
        assert health.json()["status"] == "starting"
        assert "emergify_no_such_database" in health.json()["detail"]
        assert_problem(client.get("/api/v1/catalog"), 503, "retry")


def test_genres_come_from_the_feature_table_or_are_none_when_it_does_not_answer(
    served: Served,
) -> None:
    songs = served.songs[:50]
    assert any(s.genres for s in songs)  # the sample CSV has a Genres column
    catalog = served.client.app.state.catalog  # type: ignore[attr-defined]
    ids = [s.track_id for s in songs] + ["0" * 22]  # an id not in the table is left out
    assert genres_in(catalog)(ids) == {s.track_id: tuple(s.genres) for s in songs}
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/emergify_no_such_database"
    unreachable = Catalog(make_engine(url))
    try:
        assert genres_in(unreachable)(ids) == {}
    finally:
        unreachable.engine.dispose()


def test_python_dash_m_serves_on_the_configured_url(tmp_path: Path, rec: Any) -> None:
    port = free_port()
    env = {
        **os.environ,
        "EMERGIFY_RECOMMENDER_URL": f"http://127.0.0.1:{port}",
        "EMERGIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'emergify.db'}",
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "EMERGIFY_LOG_FORMAT": "json",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emergify_recommender"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
        health = wait_for(
            lambda: httpx.get(
                f"http://127.0.0.1:{port}/health", timeout=5, headers=INTERNAL_HEADERS
            ).json(),
            what="the recommender process to answer",
        )
        assert health["status"] == "ok" and health["songs"] == 0
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert b'"service": "recommender"' in stderr, "logs are structured and tagged"


def test_items_explain_themselves_and_name_their_seed(served: Served) -> None:
    seeds = [served.songs[1].track_id, served.songs[2000].track_id]
    body = served.client.post("/api/v1/recommendations", json={"seeds": seeds, "limit": 20}).json()
    assert body["count"] == 20
    assert body["seed"]["clusters"] and len(body["seed"]["clusters"]) == 2
    assert {item["seed_track_id"] for item in body["items"]} <= set(seeds)
    for item in body["items"]:
        why = item["explanation"]
        assert len(why["closest"]) == len(why["furthest"]) == 2
        assert set(why["closest"]) | set(why["furthest"]) <= set(AUDIO_FEATURES)
        assert not set(why["closest"]) & set(why["furthest"])


def test_diversity_gives_more_distinct_artists(served: Served) -> None:
    seed = served.songs[300].track_id
    ask = {"seeds": [seed], "limit": 30, "max_per_artist": 2}
    plain = served.client.post("/api/v1/recommendations", json=ask).json()
    varied = served.client.post("/api/v1/recommendations", json={**ask, "diversity": 1}).json()

    def artists(body: dict[str, Any]) -> int:
        return len({a.casefold() for item in body["items"] for a in item["artists"]})

    assert varied["count"] == 30
    assert artists(varied) >= artists(plain)
    distances = [item["distance"] for item in varied["items"]]
    assert distances == sorted(distances)
    assert_problem(
        served.client.post("/api/v1/recommendations", json={**ask, "diversity": 2}),
        422,
        "diversity",
    )
