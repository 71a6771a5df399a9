"""The canonical song and the CSV layouts it is read from (pure functions, no I/O but files)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from emergify_contracts.song import AUDIO_FEATURES, Layout, RowError, detect_layout, row_to_song

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"

GOOD = {
    "track_id": "70kFiCsoYnJxMgIZ82WQmj",
    "name": "Same Old Haunts",
    "artists": "['The Modern Electric']",
    "danceability": "0.679",
    "energy": "0.816",
    "loudness": "-3.087",
    "speechiness": "0.0394",
    "acousticness": "0.0182",
    "instrumentalness": "0.000569",
    "liveness": "0.0495",
    "valence": "0.581",
    "tempo": "125.055",
}


def test_every_sample_row_is_a_valid_song(sample_csv: Path) -> None:
    with sample_csv.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        layout = detect_layout(reader.fieldnames or [])
        songs = [row_to_song(row, layout) for row in reader]
    assert layout is Layout.EXPORTIFY
    assert len(songs) == 4470
    assert len({s.track_id for s in songs}) == 4470
    multi = [s for s in songs if len(s.artists) > 1]
    assert len(multi) == 730  # the data README counts 730 multi-artist rows
    degenerate = next(s for s in songs if s.track_id == "0izQu4dHEGKaAdAhjHusGu")
    assert degenerate.danceability == 0 and degenerate.tempo == 0
    assert max(s.loudness for s in songs) == pytest.approx(2.576)
    assert sum(1 for s in songs if s.release_date and len(s.release_date) == 4) == 20


def test_kaggle_layout_maps_list_artists() -> None:
    header = [
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
    layout = detect_layout(header)
    row = {
        **GOOD,
        "id": GOOD["track_id"],
        "artists": "['Ionika', 'wavy witch']",
        "id_artists": "['6Kok7CY4F15SfSRwGVFLqN', '6Kok7CY4F15SfSRwGVFLqM']",
        "explicit": "0",
        "popularity": "12",
        "release_date": "1999",
        "key": "5",
        "mode": "1",
    }
    del row["track_id"]
    song = row_to_song(row, layout)
    assert layout is Layout.KAGGLE
    assert song.artists == ["Ionika", "wavy witch"]
    assert song.explicit is False and song.release_date == "1999" and song.popularity == 12


def test_genre_labelled_files_parse_except_the_row_without_features() -> None:
    assert SHARED.exists(), f"{SHARED} must be beside the repo (it is in dev and CI)"
    rejected = []
    for name in ("high", "low"):
        path = SHARED / f"{name}_popularity_spotify_data.csv"
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            layout = detect_layout(reader.fieldnames or [])
            for row in reader:
                try:
                    row_to_song(row, layout)
                except RowError:
                    rejected.append(row["track_id"])
    assert layout is Layout.GENRE_LABELLED
    assert rejected == ["2teI76KKFE6qkpLZJs7tZ7"]  # the one row whose features are empty


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"danceability": "1.7"}, "danceability 1.7 is outside [0, 1]"),
        ({"energy": "loud"}, "energy 'loud' is not a number"),
        ({"loudness": "-75"}, "loudness -75 dB is outside [-60, 5]"),
        ({"loudness": "nan"}, "loudness nan dB is outside [-60, 5]"),
        ({"tempo": "-1"}, "tempo -1 BPM must be a finite number in [0, 1000]"),
        ({"tempo": "1e30"}, "tempo 1.0E30 BPM must be a finite number in [0, 1000]"),
        ({"track_id": "abc"}, "track_id 'abc' is not a 22-character base62 Spotify id"),
        ({"valence": ""}, "valence is required"),
        ({"artists": "[]"}, "artists needs at least one name"),
    ],
)
def test_bad_values_say_what_is_wrong(change: dict[str, str], message: str) -> None:
    with pytest.raises(RowError) as info:
        row_to_song({**GOOD, **change}, Layout.CANONICAL)
    assert message in info.value.errors


def test_every_problem_in_a_row_is_reported_at_once() -> None:
    with pytest.raises(RowError) as info:
        row_to_song({**GOOD, "danceability": "2", "energy": "-1", "tempo": "x"}, Layout.CANONICAL)
    assert len(info.value.errors) == 3


def test_unknown_layout_and_missing_columns_are_named() -> None:
    with pytest.raises(ValueError, match="unknown CSV layout"):
        detect_layout(["foo", "bar"])
    with pytest.raises(ValueError, match=r"missing required columns: .*tempo"):
        detect_layout(["Spotify ID", "Track Name", "Artist Name(s)", *AUDIO_FEATURES[:-1]])


def test_single_artist_id_keeps_a_comma_in_the_name() -> None:
    header = [
        "Spotify ID",
        "Artist IDs",
        "Track Name",
        "Artist Name(s)",
        *(f.title() for f in AUDIO_FEATURES),
    ]
    layout = detect_layout(header)
    row = {
        "Spotify ID": GOOD["track_id"],
        "Artist IDs": "4V8LLVI7PbaPR0K2TGSxFF",
        "Track Name": "x",
        "Artist Name(s)": "Tyler, The Creator",
        **{f.title(): GOOD[f] for f in AUDIO_FEATURES},
    }
    assert row_to_song(row, layout).artists == ["Tyler, The Creator"]
