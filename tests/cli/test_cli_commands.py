"""The ``emergify`` command against a real gateway, ingest, broker and recommender: what it
prints, what it exits with, and what it changed (records on the topic, keys the gateway honours)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import httpx
from catalog_fixtures import SAMPLE_CSV
from cli_stack import ADMIN_KEY, CliStack
from kafka_io import consume
from typer.testing import CliRunner

from emergify_cli.main import app
from emergify_contracts.song import Song, detect_layout, row_to_song

SEED = "70kFiCsoYnJxMgIZ82WQmj"  # a song of the sample catalog
BAD_ROW_DANCEABILITY = "1.7"


def _small_upload(folder: Path, good: int) -> Path:
    """The sample's header and first ``good`` rows, then one row with danceability 1.7."""
    with SAMPLE_CSV.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        rows = [next(reader) for _ in range(good + 1)]
        fields = list(reader.fieldnames or [])
    rows[-1]["Danceability"] = BAD_ROW_DANCEABILITY
    path = folder / "upload.csv"
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_upload_reports_rejections_writes_them_and_publishes_the_rest(
    stack: CliStack, run: CliRunner, tmp_path: Path
) -> None:
    errors = tmp_path / "errors.csv"
    result = run.invoke(
        app,
        ["upload", str(_small_upload(tmp_path, 12)), "--errors-csv", str(errors)],
        env=stack.env(),
    )
    assert result.exit_code == 0, result.output
    assert "accepted 12, rejected 1" in result.output
    (rejected,) = list(csv.DictReader(errors.open(encoding="utf-8")))
    assert rejected["row"] == "13"
    assert "danceability" in rejected["errors"] and BAD_ROW_DANCEABILITY in rejected["errors"]
    assert len(consume(stack.bootstrap, stack.songs_topic, 12)) == 12


def test_upload_with_a_key_that_may_not_write_fails_with_the_gateways_reason(
    stack: CliStack, run: CliRunner, tmp_path: Path
) -> None:
    result = run.invoke(
        app, ["upload", str(_small_upload(tmp_path, 1))], env=stack.env(api_key="not-a-key")
    )
    assert result.exit_code == 1
    assert "upload failed" in result.output and "HTTP 401" in result.output


def test_recommend_prints_the_playlist_the_api_answers(stack: CliStack, run: CliRunner) -> None:
    result = run.invoke(app, ["recommend", SEED, "--limit", "5"], env=stack.env())
    assert result.exit_code == 0, result.output
    answer = httpx.post(
        f"{stack.gateway_url}/api/v1/recommendations",
        json={"seeds": [SEED], "limit": 5, "max_per_artist": 2},
        headers={"X-API-Key": ADMIN_KEY},
    ).json()
    assert len(answer["items"]) == 5
    assert f"model v{answer['model_version']}" in result.output
    for item in answer["items"]:
        assert item["name"] in result.output
        assert f"{item['distance']:.3f}" in result.output


def test_recommend_of_an_unknown_song_exits_1_with_the_problem(
    stack: CliStack, run: CliRunner
) -> None:
    result = run.invoke(app, ["recommend", "0" * 22], env=stack.env())
    assert result.exit_code == 1
    assert "HTTP 404" in result.output


def test_status_shows_each_service_and_the_catalog(stack: CliStack, run: CliRunner) -> None:
    result = run.invoke(app, ["status"], env=stack.env())
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for service, state in {
        "ingest": "ok",
        "recommender": "ok",
        "stream-processor": "unavailable",
        "spotify-gateway": "unavailable",
    }.items():
        assert any(service in line and state in line for line in lines), (service, result.output)
    assert "'songs': 4470" in result.output  # the catalog line: the whole sample


def test_status_without_a_gateway_exits_1(run: CliRunner) -> None:
    closed = "http://127.0.0.1:9"
    result = run.invoke(app, ["status"], env={"EMERGIFY_GATEWAY_URL": closed})
    assert result.exit_code == 1
    assert f"gateway unreachable at {closed}" in result.output


def _songs(path: Path) -> list[Song]:
    text = path.read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    layout = detect_layout(list(reader.fieldnames or []))
    return [row_to_song(row, layout) for row in reader]


def test_generate_writes_valid_songs_reproducibly(run: CliRunner, tmp_path: Path) -> None:
    first, again, other = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    for out, seed in ((first, "3"), (again, "3"), (other, "4")):
        result = run.invoke(app, ["generate", str(out), "--rows", "200", "--seed", seed])
        assert result.exit_code == 0, result.output
        assert f"wrote 200 songs to {out}" in result.output
    songs = _songs(first)  # every row passes the same validation an upload does
    assert len(songs) == len({s.track_id for s in songs}) == 200
    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
