"""Issue 13's acceptance for living playlists, on the whole stack as `make up` starts it (broker,
Spark, every service, the Spotify sandbox; PostgreSQL), through the api-gateway, as a listener
would, with SIGKILLs of the spotify-gateway and the stream processor along the way.

A listener creates a living playlist of 20 songs; a CSV with a near-copy of one seed is
uploaded: it enters the Spotify playlist and the furthest song leaves; the listener dislikes
it: it leaves; a refresh re-ranks the list. After every step the Spotify playlist must hold
exactly the desired songs, each once, and the desired songs must be what a brute force over the
whole catalog (the reference ranking, every song's distance in float64) with the playlist's
rules and the listener's feedback gives.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import sqlalchemy as sa
from living_rows import desired
from living_rows import header as header_row
from ranking_reference import brute_force
from spotify_stack import create_living_playlist, sign_in
from testkit import wait_for

from emergify_cli.stack import Stack
from emergify_recommender.catalog import Catalog

# Stack start, the sample catalog and a first model, two stream-processor restarts: far over
# the suite's 900 s per-test default on a loaded machine.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

SAMPLE = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"
SIZE = 20
COPY_ID = "EchoOfTheSeed000000001"
COPY_ARTIST_ID = "EchoArtist000000000001"


@pytest.fixture(scope="module")
def stack(sandbox_stack: Stack) -> Stack:
    """``api`` (the admin's client) talks to this stack."""
    return sandbox_stack


@pytest.fixture(scope="module")
def engine(stack: Stack) -> Iterator[sa.Engine]:
    e = sa.create_engine(stack.env["EMERGIFY_DATABASE_URL"])
    yield e
    e.dispose()


def sample_rows() -> tuple[list[str], list[list[str]]]:
    with SAMPLE.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, list(reader)


def near_copy_csv(header: list[str], seed: list[str]) -> bytes:
    """A different song (its own id, title and artist) that sounds almost exactly like
    ``seed``."""
    row = dict(zip(header, seed, strict=True))
    row.update(
        {
            "Spotify ID": COPY_ID,
            "Artist IDs": COPY_ARTIST_ID,
            "Track Name": "Echo of the seed",
            "Album Name": "Echoes",
            "Artist Name(s)": "The Echo Makers",
            "Popularity": "10",
            "Energy": f"{min(1.0, float(row['Energy']) + 0.001):.4f}",
        }
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerow([row[h] for h in header])
    return out.getvalue().encode()


def expected(
    engine: sa.Engine, api: httpx.Client, seeds: list[str], disliked: tuple[str, ...] = ()
) -> set[str]:
    """The playlist as the rules define it: the SIZE nearest catalog songs to the seeds
    (max_per_artist 2, seeds and disliked songs out), by brute force over the catalog as the
    database holds it now (with the model the recommender serves)."""
    index = asyncio.run(Catalog(engine).reload("acceptance"))
    assert index.model_version == api.get("/api/v1/catalog").json()["model_version"]
    seed_rows = [index.position(t) for t in seeds]
    assert None not in seed_rows
    ranked = brute_force(
        index,
        index.vectors_of(np.asarray(seed_rows, np.int64)),
        SIZE,
        max_popularity=100,
        max_per_artist=2,
        seeds=seed_rows,
        exclude=[r for r in (index.position(t) for t in disliked) if r is not None],
    )
    assert len(ranked) == SIZE
    return {index.track_id(r.row) for r in ranked}


def spotify_playlist(stack: Stack, spotify_id: str) -> list[str]:
    with httpx.Client(base_url=stack.url("spotify-sandbox"), timeout=10) as sandbox:
        mine = sandbox.get("/_sandbox/users/demo/playlists").json()["items"]
    return next(p["track_ids"] for p in mine if p["id"] == spotify_id)


def settled(engine: sa.Engine, stack: Stack, playlist_id: str, spotify_id: str) -> list[str]:
    """Wait until Spotify holds the desired state's latest version; Spotify's songs."""

    def synced() -> bool:
        row = header_row(engine, playlist_id)
        return row.synced_version == row.version

    wait_for(synced, 300, "the Spotify sync of the latest desired state")
    return spotify_playlist(stack, spotify_id)


def test_a_living_playlist_survives_kills_of_the_spotify_gateway_and_the_stream_processor(
    stack: Stack, api: httpx.Client, engine: sa.Engine
) -> None:
    header, rows = sample_rows()
    with SAMPLE.open("rb") as f:
        r = api.post("/api/v1/songs/upload", files={"file": (SAMPLE.name, f, "text/csv")})
    assert r.status_code == 202, r.text
    wait_for(
        lambda: (
            (c := api.get("/api/v1/catalog").json())["songs"] >= 4470
            and c.get("model_version") is not None
        ),
        timeout=900,  # Spark on a loaded 2-core machine: minutes
        what="the sample catalog materialised and a first model",
    )
    seed_row = rows[10]
    seeds = [seed_row[0], rows[200][0]]

    with httpx.Client(base_url=stack.url("api-gateway"), timeout=60) as browser:
        sign_in(browser, "demo")
        created = create_living_playlist(browser, seeds, SIZE, "Living")
        playlist_id = created["id"]
        spotify_id = created["spotify_playlist_id"]
        first = [s["track_id"] for s in created["songs"]]
        assert len(first) == SIZE and set(first) == expected(engine, api, seeds)
        assert spotify_playlist(stack, spotify_id) == first
        furthest = max(desired(engine, playlist_id).items(), key=lambda kv: kv[1])[0]

        # A near-copy of a seed streams in while the stream processor is dead (the upload's
        # 202 only needs ingest and the broker), and is matched while the spotify-gateway is.
        stack.kill("stream-processor")
        r = api.post(
            "/api/v1/songs/upload",
            files={"file": ("echo.csv", near_copy_csv(header, seed_row), "text/csv")},
        )
        assert r.status_code == 202, r.text
        stack.kill("spotify-gateway")
        stack.restart("stream-processor")
        wait_for(
            lambda: COPY_ID in desired(engine, playlist_id),
            600,
            "the near-copy to enter the desired state",
        )
        row = header_row(engine, playlist_id)
        assert row.synced_version < row.version  # nobody has told Spotify yet
        stack.restart("spotify-gateway")
        on_spotify = settled(engine, stack, playlist_id, spotify_id)
        entered = expected(engine, api, seeds)
        assert entered == set(first) - {furthest} | {COPY_ID}
        assert set(desired(engine, playlist_id)) == entered
        assert len(on_spotify) == len(set(on_spotify)) == SIZE
        assert set(on_spotify) == entered

        # The listener dislikes it; both the stream processor (which materialises feedback)
        # and the spotify-gateway die right after the 202.
        r = browser.post("/api/v1/feedback", json={"track_id": COPY_ID, "signal": "dislike"})
        assert r.status_code == 202, r.text
        stack.kill("stream-processor")
        stack.kill("spotify-gateway")
        stack.restart("stream-processor")
        stack.restart("spotify-gateway")
        wait_for(
            lambda: COPY_ID not in desired(engine, playlist_id),
            600,
            "the dislike to take the near-copy out of the desired state",
        )
        on_spotify = settled(engine, stack, playlist_id, spotify_id)
        assert len(on_spotify) == len(set(on_spotify)) == SIZE - 1
        assert set(on_spotify) == entered - {COPY_ID}

        # A refresh re-ranks the whole list with the listener's rules: as if nothing happened.
        refreshed = browser.post(f"/api/v1/spotify/living-playlists/{playlist_id}/refresh")
        assert refreshed.status_code == 200, refreshed.text
        final = expected(engine, api, seeds, disliked=(COPY_ID,))
        assert final == set(first)
        assert {s["track_id"] for s in refreshed.json()["songs"]} == final
        on_spotify = settled(engine, stack, playlist_id, spotify_id)
        assert len(on_spotify) == len(set(on_spotify)) == SIZE
        assert set(on_spotify) == final
        listed = browser.get(f"/api/v1/spotify/living-playlists/{playlist_id}").json()
        assert listed["songs_added"] == SIZE + 2  # the near-copy, then the furthest song back
