"""The sandbox's demo listeners and the tracks it knows, built from an Exportify CSV.

``demo`` likes ~50 catalog songs plus a few Spotify tracks Emergify's catalog lacks (its newest
like is a catalog song); ``demo2`` likes other catalog songs and, last, an unknown one;
``nocatalog`` likes only songs the catalog lacks (so /me/favourite has nothing to go on).
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from emergify_contracts.song import AUDIO_FEATURES, TRACK_ID_RE

log = structlog.get_logger()
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
NEWEST_LIKE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def base62_id(seed: str) -> str:
    """A deterministic 22-character base62 id (the shape of Spotify ids)."""
    number = int.from_bytes(hashlib.sha256(seed.encode()).digest(), "big")
    chars = []
    for _ in range(22):
        number, rest = divmod(number, 62)
        chars.append(_BASE62[rest])
    return "".join(chars)


@dataclass
class Track:
    """What the sandbox knows of a track: enough for Spotify's track object and features."""

    id: str
    name: str
    artists: list[tuple[str, str]]  # (id, name)
    album: str
    release_date: str
    duration_ms: int
    genres: list[str]
    features: dict[str, float] | None = None


@dataclass
class Listener:
    id: str
    display_name: str
    liked: list[tuple[Track, str]] = field(default_factory=list)  # newest first, with added_at


def _split(value: str) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def read_tracks(path: Path) -> list[Track]:
    """Tracks of an Exportify CSV (UTF-8 with BOM); [] when the file is missing or unreadable."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        log.warning(
            "sandbox: no catalog CSV, demo songs are synthetic", path=str(path), error=str(exc)
        )
        return []
    tracks = []
    for row in rows:
        track_id = (row.get("Spotify ID") or "").strip()
        names = _split(row.get("Artist Name(s)", ""))
        if not TRACK_ID_RE.match(track_id) or not names:
            continue
        ids = _split(row.get("Artist IDs", ""))
        if len(ids) != len(names):
            ids = [base62_id(f"artist:{n}") for n in names]
        try:
            features = {f: float(row[f.capitalize()]) for f in AUDIO_FEATURES}
        except (KeyError, ValueError):
            features = None
        tracks.append(
            Track(
                id=track_id,
                name=row.get("Track Name", "") or track_id,
                artists=list(zip(ids, names, strict=True)),
                album=row.get("Album Name", "") or "",
                release_date=row.get("Release Date", "") or "",
                duration_ms=int(float(row.get("Duration (ms)") or 0)),
                genres=_split(row.get("Genres", "")),
                features=features,
            )
        )
    return tracks


def unknown_track(n: int) -> Track:
    """A Spotify track Emergify's catalog does not have."""
    artist = f"Sandbox Artist {n % 3 + 1}"
    return Track(
        id=base62_id(f"sandbox-unknown-{n}"),
        name=f"Not In The Catalog {n}",
        artists=[(base62_id(f"artist:{artist}"), artist)],
        album="Sandbox Sessions",
        release_date="2026-01-01",
        duration_ms=200_000 + n * 1000,
        genres=["sandbox pop"],
    )


def _likes(tracks: list[Track]) -> list[tuple[Track, str]]:
    return [
        (t, (NEWEST_LIKE - timedelta(days=i, hours=3 * i)).strftime("%Y-%m-%dT%H:%M:%SZ"))
        for i, t in enumerate(tracks)
    ]


def build_listeners(tracks: list[Track], liked_songs: int) -> dict[str, Listener]:
    """The demo listeners, by id."""
    first, second = tracks[:liked_songs], tracks[liked_songs : liked_songs + 40]
    demo = list(first)
    for position, n in ((5, 1), (20, 2), (35, 3)):  # a few the catalog lacks, among the rest
        demo.insert(min(position, len(demo)), unknown_track(n))
    demo2 = [unknown_track(4), *second, unknown_track(5)]
    return {
        "demo": Listener("demo", "Demo Listener", _likes(demo)),
        "demo2": Listener("demo2", "Second Demo Listener", _likes(demo2)),
        "nocatalog": Listener(
            "nocatalog",
            "Listener Without Catalog Songs",
            _likes([unknown_track(n) for n in range(6, 11)]),
        ),
    }


def top_artists(listener: Listener) -> list[dict[str, Any]]:
    """The listener's artists, most liked first, with the genres of their songs."""
    counts: Counter[tuple[str, str]] = Counter()
    genres: dict[str, list[str]] = {}
    for track, _ in listener.liked:
        for artist in track.artists:
            counts[artist] += 1
            genres.setdefault(artist[0], [])
            for g in track.genres:
                if g not in genres[artist[0]]:
                    genres[artist[0]].append(g)
    order = {
        a: i for i, a in enumerate(dict.fromkeys(a for t, _ in listener.liked for a in t.artists))
    }
    ranked = sorted(counts, key=lambda a: (-counts[a], order[a]))
    return [{"id": a[0], "name": a[1], "genres": genres[a[0]]} for a in ranked]


TIME_RANGES = ("short_term", "medium_term", "long_term")


def top_tracks(listener: Listener, time_range: str) -> list[Track]:
    """The listener's top tracks for a time range, modelled on their likes: the last four
    weeks are the newest likes, six months every other like of the newest forty, all time
    the likes from the oldest."""
    liked = [track for track, _ in listener.liked]
    if time_range == "short_term":
        return liked[:15]
    if time_range == "medium_term":
        return liked[:40:2]
    return liked[::-1][:50]
