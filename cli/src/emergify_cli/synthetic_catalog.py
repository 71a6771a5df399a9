"""Synthetic catalogs drawn from the real data's feature distributions.

Benchmarks and large-upload tests need 100k or 1M songs; we only have 4,470 real ones.
Each synthetic song takes a real song's feature vector (a bootstrap draw, so the joint
distribution and its correlations survive) plus a little Gaussian noise, clipped to the
valid ranges, with a fresh random Spotify-style id.
"""

from __future__ import annotations

import csv
import random
import string
from collections.abc import Iterator
from pathlib import Path

from emergify_contracts.song import AUDIO_FEATURES, Song, detect_layout, row_to_song

BASE62 = string.digits + string.ascii_letters
KAGGLE_HEADER = [
    "id",
    "name",
    "popularity",
    "duration_ms",
    "explicit",
    "artists",
    "id_artists",
    "release_date",
    *AUDIO_FEATURES,
    "key",
    "mode",
    "time_signature",
]


def random_track_id(rng: random.Random) -> str:
    return "".join(rng.choice(BASE62) for _ in range(22))


def load_songs(path: Path) -> list[Song]:
    """Every valid song of a CSV in any known layout."""
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(reader.fieldnames or [])
        return [row_to_song(row, layout) for row in reader]


def synthetic_songs(real: list[Song], n: int, seed: int = 7, noise: float = 0.05) -> Iterator[Song]:
    """``n`` songs like ``real``: bootstrap + noise of ``noise`` x each feature's spread."""
    rng = random.Random(seed)
    spread = {}
    for f in AUDIO_FEATURES:
        values = [getattr(s, f) for s in real]
        mean = sum(values) / len(values)
        spread[f] = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    artists = [a for s in real for a in s.artists]
    for i in range(n):
        base = rng.choice(real)
        features = {}
        for f in AUDIO_FEATURES:
            v = getattr(base, f) + rng.gauss(0.0, noise * spread[f])
            if f == "loudness":
                v = min(5.0, max(-60.0, v))
            elif f == "tempo":
                v = max(0.0, v)
            else:
                v = min(1.0, max(0.0, v))
            features[f] = round(v, 6)
        yield Song(
            track_id=random_track_id(rng),
            name=f"{base.name} (synthetic {i})",
            artists=[rng.choice(artists)] if rng.random() < 0.85 else rng.sample(artists, 2),
            popularity=min(100, max(0, int(rng.expovariate(1 / 8)))),
            duration_ms=base.duration_ms,
            release_date=base.release_date,
            key=base.key,
            mode=base.mode,
            time_signature=base.time_signature,
            **features,
        )


def write_kaggle_csv(songs: Iterator[Song] | list[Song], path: Path) -> int:
    """Write songs in the Kaggle tracks layout (artists as ``['A', 'B']``); return the count."""
    n = 0
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(KAGGLE_HEADER)
        for s in songs:
            w.writerow(
                [
                    s.track_id,
                    s.name,
                    s.popularity,
                    s.duration_ms,
                    int(bool(s.explicit)),
                    repr(s.artists),
                    repr(s.artist_ids),
                    s.release_date or "",
                    *(getattr(s, f) for f in AUDIO_FEATURES),
                    s.key,
                    s.mode,
                    s.time_signature,
                ]
            )
            n += 1
    return n
