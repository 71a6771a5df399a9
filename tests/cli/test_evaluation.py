"""The offline evaluation (`emergify evaluate`): loading, playlist rules, metrics, the weight
choice and the command, on small labelled CSVs written here."""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from emergify_cli import evaluation
from emergify_cli.main import app
from emergify_contracts.settings import EmergifySettings
from emergify_contracts.song import AUDIO_FEATURES

ROOT = Path(__file__).resolve().parents[2]
COLUMNS = [
    "track_id",
    "track_name",
    "track_artist",
    "track_popularity",
    "playlist_genre",
    "key",
    *AUDIO_FEATURES,
]


def track_id(i: int) -> str:
    digits = string.digits + string.ascii_letters
    out = ""
    for _ in range(22):
        out, i = digits[i % 62] + out, i // 62
    return out


def song_row(i: int, artist: str, genre: str, features: np.ndarray, name: str = "") -> dict:
    row = {
        "track_id": track_id(i),
        "track_name": name or f"song {i}",
        "track_artist": artist,
        "track_popularity": str(i % 90),
        "playlist_genre": genre,
        "key": str(i % 12),
    }
    for f, v in zip(AUDIO_FEATURES, features, strict=True):
        row[f] = f"{v:.6f}"
    return row


def features_for(rng: np.random.Generator, centre: np.ndarray, noise: float) -> np.ndarray:
    x = np.clip(centre + rng.normal(0, noise, size=9), 0.01, 0.99)
    x[2] = -30 + 25 * x[2]  # loudness in dB
    x[8] = 60 + 120 * x[8]  # tempo
    return x


def write_catalog(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return path


def artist_world(path: Path, seed: int = 4) -> Path:
    """12 artists, 3 genres: each artist has one sound and one genre; songs are noisy, so
    one song's numbers say less about its genre than its artist's mean."""
    rng = np.random.default_rng(seed)
    genres = ["pop", "rock", "jazz"]
    genre_centres = {g: rng.uniform(0.2, 0.8, size=9) for g in genres}
    rows, i = [], 0
    for a in range(12):
        genre = genres[a % 3]
        centre = genre_centres[genre] + rng.normal(0, 0.05, size=9)
        for _ in range(8):
            rows.append(song_row(i, f"Artist {a}", genre, features_for(rng, centre, 0.25)))
            i += 1
    return write_catalog(path, rows)


def test_load_dedups_track_ids_with_the_union_of_labels_and_never_reads_tags_from_the_label(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    x = features_for(rng, np.full(9, 0.5), 0.1)
    rows = [
        song_row(1, "Lady Gaga, Bruno Mars", "pop", x),
        song_row(1, "Lady Gaga, Bruno Mars", "R&B", x * 0.9),  # same track, other playlist
        song_row(2, "lady  gaga", "pop", x),
        {**song_row(3, "X", "rock", x), "danceability": "7"},  # invalid: rejected
        song_row(4, "Y", "", x),  # no label: a candidate, never a seed
    ]
    catalog = evaluation.load_labelled(write_catalog(tmp_path / "l.csv", rows))
    assert len(catalog) == 3
    assert (catalog.rows_read, catalog.rows_rejected, catalog.duplicate_rows) == (5, 1, 1)
    assert catalog.labels[0] == {"pop", "r&b"} and catalog.labels[2] == frozenset()
    np.testing.assert_allclose(catalog.raw[0], x, atol=1e-6)  # the first row's features
    assert catalog.artist_keys[0] == ("name:lady gaga", "name:bruno mars")
    assert catalog.artist_keys[1] == ("name:lady gaga",)
    assert not any(catalog.tags)  # playlist_genre feeds Song.genres in this layout: the label
    with pytest.raises(ValueError, match="no label column 'mood'"):
        evaluation.load_labelled(tmp_path / "l.csv", "mood")


def test_rules_and_metrics_on_a_hand_checked_case(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = features_for(rng, np.full(9, 0.5), 0.0)
    rows = [
        song_row(0, "A", "pop", base, "Seed"),
        song_row(1, "A", "pop", base + 0.001, "Seed - Remastered 2011"),  # duplicate of seed
        song_row(2, "A", "pop", base + 0.002),
        song_row(3, "A", "pop", base + 0.003),
        song_row(4, "A", "pop", base + 0.004),  # third song of A: over the cap of 2
        song_row(5, "B", "rock", base + 0.005),
        song_row(6, "C", "pop", base + 0.006),
    ]
    catalog = evaluation.load_labelled(write_catalog(tmp_path / "h.csv", rows))
    prep = evaluation._prepare(catalog)
    z = evaluation.standardize(catalog.raw)
    method = evaluation.Method("scaled", z, "scaled")
    lists = evaluation.rank_lists(method, [0], prep, top=3, max_per_artist=2)
    assert lists.plain[0] == [2, 3, 5]
    assert lists.excluded[0] == [5, 6]
    m = evaluation.metrics(lists, prep, z, catalog.popularity, top=3)
    assert m["precision_at_k"] == pytest.approx(2 / 3)
    # picks: hit, hit, miss; 5 relevant songs available -> ideal is 3 hits
    ideal = 1 + 1 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg_at_k"] == pytest.approx((1 + 1 / np.log2(3)) / ideal)
    # artist excluded: picks 5 (rock, miss), 6 (pop, hit); only song 6 is relevant
    assert m["precision_at_k_artist_excluded"] == pytest.approx(1 / 3)
    assert m["ndcg_at_k_artist_excluded"] == pytest.approx((1 / np.log2(3)) / 1.0)
    assert m["coverage"] == pytest.approx(3 / 7)
    assert m["mean_popularity"] == pytest.approx((2 + 3 + 5) / 3)


def test_the_hybrid_beats_audio_alone_when_artists_carry_the_genre(tmp_path: Path) -> None:
    catalog = evaluation.load_labelled(artist_world(tmp_path / "w.csv"))
    methods = evaluation.methods_for(catalog, weights=(0.0, 2.0), rules=("mean",))
    result = evaluation.evaluate_file(catalog, methods)
    p = {r["method"]: r["all"]["precision_at_k_artist_excluded"] for r in result.rows}
    assert p["hybrid mean w=0"] == pytest.approx(p["scaled Manhattan (exact)"])
    assert p["hybrid mean w=2"] > p["scaled Manhattan (exact)"]
    assert p["scaled Manhattan (exact)"] > p["random"]
    for row in result.rows:
        assert row["validation"]["seeds"] + row["test"]["seeds"] == row["all"]["seeds"] == 96


def test_validation_and_test_seeds_share_no_artist(tmp_path: Path) -> None:
    catalog = evaluation.load_labelled(artist_world(tmp_path / "w.csv"))
    validation, test = evaluation.split_seeds(catalog, list(range(len(catalog))))
    assert validation and test
    firsts = {catalog.artist_keys[s][0] for s in validation}
    assert not firsts & {catalog.artist_keys[s][0] for s in test}


def test_the_weight_is_chosen_on_validation_figures_only() -> None:
    def row(rule: str, w: float, validation: float, test: float) -> dict:
        return {
            "family": "hybrid",
            "multi_artist_rule": rule,
            "artist_weight": w,
            "validation": {"precision_at_k": 0, "precision_at_k_artist_excluded": validation},
            "test": {"precision_at_k": 0, "precision_at_k_artist_excluded": test},
        }

    one = evaluation.FileResult(None, [row("mean", 1, 0.30, 0.9), row("mean", 2, 0.32, 0.1)])  # type: ignore[arg-type]
    two = evaluation.FileResult(None, [row("mean", 1, 0.30, 0.9), row("mean", 2, 0.30, 0.1)])  # type: ignore[arg-type]
    chosen = evaluation.choose_hybrid([one, two])
    assert (chosen["multi_artist_rule"], chosen["artist_weight"]) == ("mean", 2)
    tie = evaluation.FileResult(None, [row("mean", 1, 0.3, 0), row("mean", 2, 0.3, 0)])  # type: ignore[arg-type]
    assert evaluation.choose_hybrid([tie])["artist_weight"] == 1  # ties: the smaller weight


def test_tags_become_an_l1_part_only_where_the_layout_has_artist_genres(tmp_path: Path) -> None:
    t = evaluation.tag_vectors([frozenset({"pop", "rock"}), frozenset({"pop"}), frozenset()])
    assert np.abs(t[0] - t[1]).sum() == pytest.approx(1.0)
    assert t[2].sum() == 0 and t[0].sum() == pytest.approx(1.0)
    exportify = ROOT / "data" / "every_fresh_find.csv"
    catalog = evaluation.load_labelled(exportify, label="Added By")
    assert 0 < sum(bool(x) for x in catalog.tags) < len(catalog)
    assert catalog.artist_keys[0] == ("5Y4KzJ4mRooyCG3qmIqOtd",)  # Spotify artist ids


def test_the_command_writes_json_and_a_chart(tmp_path: Path) -> None:
    path = artist_world(tmp_path / "w.csv")
    out, chart = tmp_path / "r" / "e.json", tmp_path / "r" / "e.png"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(path),
            "--weights",
            "0.5,2",
            "--sample",
            "60",
            "--out",
            str(out),
            "--chart",
            str(chart),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["chosen"]["artist_weight"] in (0.5, 2.0)
    assert {r["method"] for r in doc["rows"]} >= {
        "random",
        "raw Manhattan (notebooks)",
        "scaled Manhattan (exact)",
        "hybrid weighted w=2",
    }
    assert all(r["all"]["seeds"] == 60 for r in doc["rows"])
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(app, ["evaluate", str(path), "--label", "mood", "--out", str(out)])
    assert bad.exit_code == 1 and "no label column" in bad.output


def test_the_settings_default_is_the_weight_the_committed_evaluation_chose() -> None:
    doc = json.loads((ROOT / "bench" / "results" / "evaluation.json").read_text())
    settings = EmergifySettings(_env_file=None)
    assert settings.similarity_artist_weight == doc["chosen"]["artist_weight"]
    assert settings.similarity_multi_artist_rule == doc["chosen"]["multi_artist_rule"]
