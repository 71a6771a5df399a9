"""JSON uploads through POST /api/v1/songs."""

from __future__ import annotations

from catalog_fixtures import json_song as song
from fastapi.testclient import TestClient

from emergify_contracts.events import SongEvent
from emergify_ingest.master_dataset import read_master_dataset

PROBLEM = "application/problem+json"
URL = "/api/v1/songs"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_single_song(client: TestClient, consume, broker) -> None:
    response = client.post(URL, json=song())

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["layout"] == "json"
    assert report["accepted"] == 1
    assert report["rejected"] == []
    settings = client.app.state.settings
    (record,) = consume(broker.bootstrap, settings.songs_topic, 1)
    assert record.key == b"5P6nbeGMqnAGwqt9rrraaQ"
    event = SongEvent.model_validate_json(record.value)
    assert event.source == "json"
    assert event.upload_id == report["upload_id"]
    assert event.song.artists == ["Lauren Faith"]
    lake = read_master_dataset(settings.lake_uri).to_pylist()
    assert [(r["track_id"], r["row"], r["source"]) for r in lake] == [
        ("5P6nbeGMqnAGwqt9rrraaQ", 1, "json")
    ]


def test_list_with_bad_items(client: TestClient) -> None:
    items = [
        song("2ERNqTqQJKm10LH6etp0IE"),
        song("4OTzYYMAUUV30VRCZSbmJ2", danceability=1.7),
        song("0CM3khntl1m4Un7q1E0KJS", tempo="fast"),
        song("bad id"),
        {k: v for k, v in song("5L8AaMMwmtrRtpfor6Oiob").items() if k != "valence"},
        "not an object",
        song("2ERNqTqQJKm10LH6etp0IE", name="again"),
        song("0MYd6Ko48fNuzxVISiVsZd", popularity=101, unknown_field="ignored"),
        song("4iV5W9uYEdYUVa79Axb7Rh", loudness=-7.0, genres=["indie pop"]),
    ]

    response = client.post(URL, json=items)

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["accepted"] == 2
    assert report["rejected_count"] == 7
    by_row = {r["row"]: r for r in report["rejected"]}
    assert by_row[2]["errors"] == ["danceability 1.7 is outside [0, 1]"]
    assert by_row[3]["errors"] == ["tempo 'fast' is not a number"]
    assert by_row[4]["track_id"] == "bad id"
    assert by_row[4]["errors"] == ["track_id 'bad id' is not a 22-character base62 Spotify id"]
    assert by_row[5]["errors"] == ["valence is required"]
    assert by_row[6] == {
        "row": 6,
        "track_id": None,
        "errors": ["the item is a str, not a song object"],
    }
    assert by_row[7]["errors"] == [
        "track_id 2ERNqTqQJKm10LH6etp0IE already appears in row 1 of this upload"
    ]
    assert by_row[8]["errors"] == ["popularity 101 is outside [0, 100]"]
    lake = read_master_dataset(client.app.state.settings.lake_uri)
    assert sorted(lake.column("row").to_pylist()) == [1, 9]


def test_all_items_invalid_is_422(client: TestClient) -> None:
    body = assert_problem(client.post(URL, json=[song(energy=-1)]), 422)
    assert body["rejected"] == [
        {"row": 1, "track_id": "5P6nbeGMqnAGwqt9rrraaQ", "errors": ["energy -1 is outside [0, 1]"]}
    ]


def test_whole_request_problems(client: TestClient) -> None:
    json_type = {"content-type": "application/json"}
    assert (
        "not valid JSON"
        in assert_problem(client.post(URL, content=b"{not json", headers=json_type), 422)["detail"]
    )
    assert assert_problem(client.post(URL, content=b"\xff\xfe{}", headers=json_type), 422)
    assert (
        "empty" in assert_problem(client.post(URL, content=b"", headers=json_type), 422)["detail"]
    )
    assert "int" in assert_problem(client.post(URL, json=42), 422)["detail"]
    assert "empty" in assert_problem(client.post(URL, json=[]), 422)["detail"]
    wrong = client.post(URL, content=b"a,b", headers={"content-type": "text/csv"})
    assert "application/json" in assert_problem(wrong, 415)["detail"]
    assert assert_problem(client.post(URL, content=b"{}"), 415)  # no content type at all
    assert read_master_dataset(client.app.state.settings.lake_uri).num_rows == 0


def test_limits(broker, make_client) -> None:
    client = make_client(broker, max_rows=2, max_upload_bytes=4_000)
    ids = ["2ERNqTqQJKm10LH6etp0IE", "4OTzYYMAUUV30VRCZSbmJ2", "0CM3khntl1m4Un7q1E0KJS"]

    assert assert_problem(client.post(URL, json=[song(i) for i in ids]), 413)["max_rows"] == 2
    big = [song(ids[0], name="x" * 5_000)]
    assert "4000 bytes" in assert_problem(client.post(URL, json=big), 413)["detail"]
    assert client.post(URL, json=[song(i) for i in ids[:2]]).status_code == 202


def test_max_rows_is_checked_while_parsing(broker, make_client) -> None:
    """Parsing stops at the first song past max_rows: what follows is never read, so a list
    that breaks off after the limit is refused for its length, not for its syntax."""
    import json

    client = make_client(broker, max_rows=2)
    ids = ["2ERNqTqQJKm10LH6etp0IE", "4OTzYYMAUUV30VRCZSbmJ2", "0CM3khntl1m4Un7q1E0KJS"]
    head = ", ".join(json.dumps(song(i)) for i in ids)
    body = f"[{head}, {{this is never parsed".encode()
    headers = {"content-type": "application/json"}
    problem = assert_problem(client.post(URL, content=body, headers=headers), 413)
    assert problem["max_rows"] == 2
    assert "more than 2 songs" in problem["detail"]
    # Within the limit the whole document must still be valid JSON.
    broken = f"[{json.dumps(song(ids[0]))}, {{oops".encode()
    assert (
        "not valid JSON"
        in assert_problem(client.post(URL, content=broken, headers=headers), 422)["detail"]
    )
    trailing = f"[{json.dumps(song(ids[0]))}] junk".encode()
    assert assert_problem(client.post(URL, content=trailing, headers=headers), 422)
    assert (
        client.post(
            URL, content=f"[{head.rsplit(', {', 1)[0]}]".encode(), headers=headers
        ).status_code
        == 202
    )


def test_vendor_json_media_type_is_accepted(client: TestClient) -> None:
    import json

    response = client.post(
        URL, content=json.dumps(song()), headers={"content-type": "application/vnd.api+json"}
    )
    assert response.status_code == 202, response.text


def test_unknown_routes_are_problems(client: TestClient) -> None:
    assert_problem(client.get("/api/v1/nothing"), 404)
    assert_problem(client.get(URL), 405)


def test_a_duration_too_large_for_any_column_is_a_rejected_row(client: TestClient) -> None:
    # Found by the fuzzer: accepted, it overflowed the master dataset's int64 column (a 500).
    response = client.post(URL, json=song(duration_ms=10**30))
    body = assert_problem(response, 422)
    assert body["rejected"][0]["errors"] == [
        "duration_ms 1000000000000000000000000000000 is outside [0, 86400000]"
    ]
