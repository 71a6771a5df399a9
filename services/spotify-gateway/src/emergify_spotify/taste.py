"""A listener's taste from their Spotify history: seeds for "recommend for me".

Top tracks over three time ranges and the newest liked songs, each source with a weight
(recent listening counts most), restricted to songs the catalog knows (the catalog, not
Spotify, has the audio features since November 2024). The answer says which seeds it used and
why, so a listener can see where a playlist came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from emergify_spotify.catalog import Catalog, CatalogUnavailableError
from emergify_spotify.listener import SPOTIFY_PAGE, saved_tracks
from emergify_spotify.spotify_api import SpotifyApi

#: Weight of a top track by the time range it tops (Spotify's three ranges).
TOP_RANGE_WEIGHTS: dict[str, tuple[float, str]] = {
    "short_term": (1.0, "one of your top tracks of the last 4 weeks"),
    "medium_term": (0.7, "one of your top tracks of the last 6 months"),
    "long_term": (0.5, "one of your all-time top tracks"),
}


@dataclass(frozen=True)
class TasteSeed:
    """A seed drawn from the listener's history."""

    track_id: str
    weight: float  # in (0, 1]
    why: str


def _liked_weight(added_at: str, now: datetime, half_life_days: float) -> float:
    added = datetime.fromisoformat(added_at.replace("Z", "+00:00"))
    age_days = max(0.0, (now - added).total_seconds() / 86_400)
    return max(1e-3, 0.5 ** (age_days / half_life_days))


def candidate_seeds(
    top: dict[str, list[dict[str, Any]]],
    saved: list[dict[str, Any]],
    now: datetime,
    half_life_days: float,
) -> dict[str, TasteSeed]:
    """Every track of the history with its best weight and the reason for it."""
    best: dict[str, TasteSeed] = {}

    def offer(track_id: str, weight: float, why: str) -> None:
        if track_id and (track_id not in best or weight > best[track_id].weight):
            best[track_id] = TasteSeed(track_id, round(weight, 4), why)

    for time_range, tracks in top.items():
        weight, why = TOP_RANGE_WEIGHTS[time_range]
        for track in tracks:
            offer(track.get("id") or "", weight, why)
    for item in saved:
        track = item.get("track") or {}
        weight = _liked_weight(item["added_at"], now, half_life_days)
        offer(track.get("id") or "", weight, f"liked on {item['added_at'][:10]}")
    return best


def taste_seeds(
    api: SpotifyApi,
    catalog: Catalog,
    limit: int,
    half_life_days: float,
    now: datetime | None = None,
) -> list[TasteSeed]:
    """The listener's ``limit`` strongest seeds that the catalog knows, strongest first."""
    now = now or datetime.now(UTC)
    top = {
        time_range: api.call(
            lambda sp, time_range=time_range: sp.current_user_top_tracks(
                limit=SPOTIFY_PAGE, offset=0, time_range=time_range
            ),
            "read your top tracks",
        )["items"]
        for time_range in TOP_RANGE_WEIGHTS
    }
    saved, _ = saved_tracks(api, SPOTIFY_PAGE)
    candidates = sorted(
        candidate_seeds(top, saved, now, half_life_days).values(),
        key=lambda seed: (-seed.weight, seed.track_id),
    )
    known = catalog.known([seed.track_id for seed in candidates])
    if known is None:
        raise CatalogUnavailableError("the catalog cannot say which of your songs it knows")
    return [seed for seed in candidates if known[seed.track_id]][:limit]
