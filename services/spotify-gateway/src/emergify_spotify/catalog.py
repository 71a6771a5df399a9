"""What Emergify's catalog knows about a song, asked of the recommender (the serving layer)."""

from __future__ import annotations

import random
from typing import Any

import httpx

from emergify_contracts.song import AUDIO_FEATURES


class CatalogUnavailableError(Exception):
    """The recommender did not answer usefully."""


class Catalog:
    """Look-ups at ``{recommender_url}/api/v1/songs``."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client

    def song(self, track_id: str) -> dict[str, Any] | None:
        """The catalog's song (features, cluster...), or None when the catalog lacks it."""
        try:
            response = self.client.get(f"/api/v1/songs/{track_id}")
        except httpx.HTTPError as exc:
            raise CatalogUnavailableError(type(exc).__name__) from None
        if response.status_code in (404, 422):  # 422: not a catalog-shaped id
            return None
        if response.status_code != 200:
            raise CatalogUnavailableError(f"HTTP {response.status_code}")
        return response.json()

    def known(self, track_ids: list[str]) -> dict[str, bool] | None:
        """Which of ``track_ids`` the catalog knows; None when the recommender is unavailable."""
        try:
            return {track_id: self.song(track_id) is not None for track_id in track_ids}
        except CatalogUnavailableError:
            return None

    def search(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        """Catalog songs whose name or artists contain ``query`` (empty when unavailable)."""
        try:
            response = self.client.get("/api/v1/songs", params={"q": query, "limit": limit})
        except httpx.HTTPError:
            return []
        if response.status_code != 200:
            return []
        return list(response.json().get("items", []))

    def suggestion(self, artist_names: list[str], rng: random.Random) -> dict[str, Any] | None:
        """A catalog song to use as a seed instead: one by an artist the listener likes if the
        catalog has any, else a random one."""
        for name in artist_names:
            hits = self.search(name, limit=5)
            if hits:
                return rng.choice(hits)
        for letter in "eaoi":  # nearly every title contains one of these
            hits = self.search(letter, limit=100)
            if hits:
                return rng.choice(hits)
        return None


def features_of(song: dict[str, Any]) -> dict[str, float]:
    """The nine ranking features of a catalog song (or a Spotify audio-features object)."""
    return {name: float(song[name]) for name in AUDIO_FEATURES}
