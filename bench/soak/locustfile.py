"""The load of `make soak`: listeners browsing through the API gateway.

Each simulated user sends one request per second (``constant_throughput(1)``), so the rate is
the number of users; the mix is recommendations 5 : search 3 : song detail 2 : catalog 1.
Song ids and search words come from the sample catalog the soak loads. Any answer but a 2xx
counts as a failure (a 429, 503 or 504 included). Each task has a tag (recommendations,
search, song, catalog): locust's ``--tags`` runs a subset.

Settings (environment): ``EMERGIFY_SOAK_API_KEY`` (the stack's admin key) and
``EMERGIFY_SOAK_SAMPLE`` (the CSV whose songs are in the catalog).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import ClassVar

import gevent
from locust import FastHttpUser, constant_throughput, tag, task

from emergify_cli.synthetic_catalog import load_songs

_SAMPLE = Path(
    os.environ.get(
        "EMERGIFY_SOAK_SAMPLE",
        Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv",
    )
)
_SONGS = load_songs(_SAMPLE)
_IDS = [s.track_id for s in _SONGS]
_WORDS = sorted({w for s in _SONGS for w in s.name.lower().split() if len(w) >= 4})


class Listener(FastHttpUser):
    """One listener: asks for recommendations, searches, opens songs, checks the catalog.

    FastHttpUser (geventhttpclient): the lighter client, so the load generator itself costs
    less of the two cores it shares with the stack."""

    wait_time = constant_throughput(1)
    default_headers: ClassVar[dict[str, str]] = {
        "X-API-Key": os.environ.get("EMERGIFY_SOAK_API_KEY", "")
    }

    def on_start(self) -> None:
        self.rng = random.Random()
        # Every user starts at once (spawn rate = users), and constant_throughput keeps each
        # one's phase: without a random offset all of them fire in the same instant every
        # second, a burst of N concurrent requests instead of a steady rate.
        gevent.sleep(self.rng.random())

    @task(5)
    @tag("recommendations")
    def recommendations(self) -> None:
        seeds = self.rng.sample(_IDS, self.rng.choice((1, 1, 2, 3)))
        self.client.post(
            "/api/v1/recommendations",
            json={"seeds": seeds, "limit": 20},
            name="POST /api/v1/recommendations",
        )

    @task(3)
    @tag("search")
    def search(self) -> None:
        self.client.get(
            "/api/v1/songs",
            params={"q": self.rng.choice(_WORDS), "limit": 20},
            name="GET /api/v1/songs?q=",
        )

    @task(2)
    @tag("song")
    def song(self) -> None:
        self.client.get(f"/api/v1/songs/{self.rng.choice(_IDS)}", name="GET /api/v1/songs/{id}")

    @task(1)
    @tag("catalog")
    def catalog(self) -> None:
        self.client.get("/api/v1/catalog", name="GET /api/v1/catalog")
