"""One song's way from upload to recommendation, through the gateway, on real parts:
the embedded broker, Spark Structured Streaming, MLlib, PostgreSQL and every service."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
import numpy as np
import sqlalchemy as sa
from testkit import wait_for

from emergify_cli.stack import Stack
from emergify_cli.synthetic_catalog import load_songs, synthetic_songs, write_kaggle_csv
from emergify_contracts.internal_auth import internal_headers
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import make_engine, model_versions

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"


def test_writes_need_the_admin_key(stack: Stack) -> None:
    with SAMPLE.open("rb") as f:
        r = httpx.post(
            f"{stack.url('api-gateway')}/api/v1/songs/upload",
            files={"file": ("s.csv", f, "text/csv")},
            timeout=30,
        )
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")


def test_the_services_behind_the_gateway_refuse_direct_calls(stack: Stack) -> None:
    # The embedded stack as `make up` runs it: loopback is not a boundary.
    calls = {
        "ingest": ("POST", "/api/v1/songs"),
        "stream-processor": ("POST", "/admin/retrain"),
        "recommender": ("GET", "/api/v1/catalog"),
        "spotify-gateway": ("GET", "/api/v1/spotify/login"),
    }
    for service, (method, path) in calls.items():
        direct = httpx.request(method, stack.url(service) + path, json=[], timeout=30)
        assert direct.status_code == 401, (service, direct.text)
        assert direct.headers["content-type"] == "application/problem+json"
        health = httpx.get(
            stack.url(service) + "/health", headers=internal_headers(stack.settings), timeout=30
        )
        assert health.status_code == 200, (service, health.text)


def test_sample_catalog_is_materialised_clustered_and_recommendable(
    stack: Stack, api: httpx.Client
) -> None:
    with SAMPLE.open("rb") as f:
        r = api.post(
            "/api/v1/songs/upload", files={"file": ("every_fresh_find.csv", f, "text/csv")}
        )
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 4470 and r.json()["rejected"] == []

    catalog = wait_for(
        lambda: (
            (c := api.get("/api/v1/catalog").json())["songs"] == 4470
            and c.get("model_version") is not None
            and c
        ),
        timeout=300,
        what="4,470 songs and a model",
    )
    model = api.get("/api/v1/model").json()
    assert model["version"] == catalog["model_version"]
    assert model["k"] >= 2 and -1 <= model["silhouette"] <= 1

    seed = "70kFiCsoYnJxMgIZ82WQmj"
    song = api.get(f"/api/v1/songs/{seed}").json()
    assert song["name"] == "Same Old Haunts" and song["cluster"] is not None

    r = api.post("/api/v1/recommendations", json={"seeds": [seed], "limit": 10})
    assert r.status_code == 200, r.text
    answer = r.json()
    items = answer["items"]
    assert len(items) == 10
    assert seed not in {i["track_id"] for i in items}
    distances = [i["distance"] for i in items]
    assert distances == sorted(distances)

    # The distances blend Manhattan on the standardized features of the published model with
    # the artists' sound profiles, at the weight stored with the model.
    engine = make_engine(stack.env["EMERGIFY_DATABASE_URL"])
    with engine.connect() as conn:
        artifact = conn.execute(
            sa.select(model_versions.c.artifact).order_by(model_versions.c.version.desc())
        ).scalar_one()
    engine.dispose()
    pm = PortableModel.model_validate(artifact)
    means, scales = np.array(pm.means), np.array(pm.scales)

    def z(features: dict[str, float]) -> np.ndarray:
        return (np.array([features[f] for f in AUDIO_FEATURES]) - means) / scales

    weight = answer["similarity"]["artist_weight"]
    assert weight == api.get("/api/v1/model").json()["similarity"]["artist_weight"] > 0
    seed_z = z(song)
    for item in items:
        audio = np.abs(z(item["features"]) - seed_z).sum()
        explanation = item["explanation"]
        assert abs(explanation["audio_distance"] - audio) < 1e-6 * max(1.0, audio)
        expected = audio + weight * explanation["artist_distance"]
        assert abs(item["distance"] - expected) < 1e-6 * max(1.0, expected)
        assert item["cluster"] is not None


def test_another_upload_in_the_other_layout_becomes_visible_with_bad_rows_reported(
    stack: Stack, api: httpx.Client, tmp_path: Path
) -> None:
    songs = list(synthetic_songs(load_songs(SAMPLE), 3000, seed=11))
    path = tmp_path / "kaggle.csv"
    write_kaggle_csv(songs, path)
    # Append three bad rows: out of range, not a number, bad id.
    good = path.read_text().splitlines()[1]
    cells = next(csv.reader(io.StringIO(good)))
    bad_rows = []
    for n, change in enumerate(({8: "1.7"}, {9: "loud"}, {0: "not-an-id"})):
        row = list(cells)
        row[0] = f"{n}" + "Z" * 21
        for i, v in change.items():
            row[i] = v
        bad_rows.append(row)
    with path.open("a", newline="") as f:
        csv.writer(f).writerows(bad_rows)

    with path.open("rb") as f:
        r = api.post("/api/v1/songs/upload", files={"file": ("kaggle.csv", f, "text/csv")})
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["accepted"] == 3000
    errors = {e for rej in body["rejected"] for e in rej["errors"]}
    assert [rej["row"] for rej in body["rejected"]] == [3001, 3002, 3003]
    assert "danceability 1.7 is outside [0, 1]" in errors
    assert "energy 'loud' is not a number" in errors

    wait_for(
        lambda: api.get("/api/v1/catalog").json()["songs"] == 7470,
        timeout=120,
        what="the 3,000 new songs in the catalog",
    )
    for s in songs[::300]:
        got = api.get(f"/api/v1/songs/{s.track_id}")
        assert got.status_code == 200
        assert got.json()["artists"] == s.artists


def test_docs_show_every_public_endpoint(stack: Stack) -> None:
    base = stack.url("api-gateway")
    assert "swagger" in httpx.get(f"{base}/docs", timeout=10).text.lower()
    spec = httpx.get(f"{base}/openapi.json", timeout=10).json()
    expected = {
        ("get", "/health"),
        ("post", "/api/v1/songs"),
        ("post", "/api/v1/songs/upload"),
        ("get", "/api/v1/songs/{track_id}"),
        ("get", "/api/v1/songs"),
        ("get", "/api/v1/catalog"),
        ("post", "/api/v1/recommendations"),
        ("get", "/api/v1/model"),
        ("post", "/api/v1/model/retrain"),
        ("get", "/api/v1/clusters"),
        ("get", "/api/v1/spotify/login"),
        ("post", "/api/v1/spotify/playlists"),
    }
    present = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert expected <= present, expected - present
    rec = spec["paths"]["/api/v1/recommendations"]["post"]
    assert "requestBody" in rec and "200" in rec["responses"]
