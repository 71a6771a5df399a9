"""CSV uploads through POST /api/v1/songs/upload, on the real broker with a tmp lake."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.compute as pc
from aiokafka.partitioner import DefaultPartitioner
from fastapi.testclient import TestClient

from emergify_contracts.events import SongEvent
from emergify_ingest.master_dataset import master_dataset_files, read_master_dataset

PROBLEM = "application/problem+json"

KAGGLE_HEADER = (
    "id,name,popularity,duration_ms,explicit,artists,id_artists,release_date,danceability,"
    "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,"
    "tempo,time_signature"
)
IDS = ["35iwgR4jXetI318WEWsa1Q", "021ht4sdgPcrDgSk7JTbKY", "07A5yehtSnoedViJAZkNnc"]


def kaggle_row(track_id: str, **changes: str) -> str:
    values = {
        "id": track_id,
        "name": "Carve",
        "popularity": "6",
        "duration_ms": "126903",
        "explicit": "0",
        "artists": "\"['Uli', 'Dua Lipa']\"",
        "id_artists": "\"['45tIt06XoI0Iio4LBEVpls', '6M2wZ9GZgrQXHCFfjv46we']\"",
        "release_date": "1922-02-22",
        "danceability": "0.645",
        "energy": "0.445",
        "key": "0",
        "loudness": "-13.338",
        "mode": "1",
        "speechiness": "0.451",
        "acousticness": "0.674",
        "instrumentalness": "0.744",
        "liveness": "0.151",
        "valence": "0.127",
        "tempo": "104.851",
        "time_signature": "3",
        **changes,
    }
    return ",".join(values[c] for c in KAGGLE_HEADER.split(","))


def kaggle_csv(*rows: str) -> bytes:
    return ("\n".join([KAGGLE_HEADER, *rows]) + "\n").encode()


def upload(client: TestClient, content: bytes, filename: str = "songs.csv"):
    return client.post("/api/v1/songs/upload", files={"file": (filename, content, "text/csv")})


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


def test_sample_catalog_reaches_topic_and_lake(
    client: TestClient, sample_csv: Path, consume, broker
) -> None:
    response = upload(client, sample_csv.read_bytes(), "every_fresh_find.csv")

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["layout"] == "exportify"
    assert report["accepted"] == 4470
    assert report["rejected"] == []
    assert report["warnings"] == []
    with sample_csv.open(encoding="utf-8-sig", newline="") as fh:
        expected_ids = {row["Spotify ID"] for row in csv.DictReader(fh)}
    assert len(expected_ids) == 4470

    settings = client.app.state.settings
    records = consume(broker.bootstrap, settings.songs_topic, 4470)
    assert len(records) == 4470
    assert {r.key.decode() for r in records} == expected_ids
    # Batches are built per partition by the service: each key where the default partitioner
    # (aiokafka's, Kafka's murmur2) puts it, so a track's versions stay in order.
    partitions = list(range(settings.topic_partitions))
    assert all(r.partition == DefaultPartitioner()(r.key, partitions, partitions) for r in records)
    event = SongEvent.model_validate_json(records[0].value)
    assert event.upload_id == report["upload_id"]
    assert event.source == "csv:exportify"
    assert event.song.track_id == records[0].key.decode()

    lake = read_master_dataset(settings.lake_uri)
    assert lake.num_rows == 4470
    assert set(lake.column("track_id").to_pylist()) == expected_ids
    assert set(lake.column("upload_id").to_pylist()) == {report["upload_id"]}
    assert sorted(lake.column("row").to_pylist()) == list(range(1, 4471))


def test_chunks_become_one_parquet_file_each(
    broker, make_client, sample_csv: Path, consume
) -> None:
    client = make_client(broker, chunk_rows=1000)
    response = upload(client, sample_csv.read_bytes())

    assert response.status_code == 202, response.text
    upload_id = response.json()["upload_id"]
    settings = client.app.state.settings
    files = master_dataset_files(settings.lake_uri)
    assert [f.name for f in files] == [f"{upload_id}-{i:05d}.parquet" for i in range(5)]
    assert all(f.parent.name.startswith("date=") for f in files)
    assert not list(Path(settings.lake_uri).rglob("*.tmp"))
    assert read_master_dataset(settings.lake_uri).num_rows == 4470
    assert len(consume(broker.bootstrap, settings.songs_topic, 4470)) == 4470


def test_kaggle_layout_with_list_artists(client: TestClient) -> None:
    content = kaggle_csv(
        kaggle_row(IDS[0]),
        kaggle_row(IDS[1], artists="\"['Solo']\"", id_artists="\"['45tIt06XoI0Iio4LBEVpls']\""),
    )

    response = upload(client, content)

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["layout"] == "kaggle"
    assert report["accepted"] == 2
    lake = read_master_dataset(client.app.state.settings.lake_uri).to_pylist()
    by_id = {row["track_id"]: row for row in lake}
    assert by_id[IDS[0]]["artists"] == ["Uli", "Dua Lipa"]
    assert by_id[IDS[0]]["artist_ids"] == ["45tIt06XoI0Iio4LBEVpls", "6M2wZ9GZgrQXHCFfjv46we"]
    assert by_id[IDS[1]]["artists"] == ["Solo"]
    assert by_id[IDS[0]]["explicit"] is False
    assert by_id[IDS[0]]["source"] == "csv:kaggle"


def test_bad_rows_are_listed_with_reasons(client: TestClient) -> None:
    content = kaggle_csv(
        kaggle_row(IDS[0]),
        kaggle_row(IDS[1], danceability="1.7"),
        kaggle_row(IDS[2], tempo="fast"),
        kaggle_row("not-an-id"),
        kaggle_row("4iV5W9uYEdYUVa79Axb7Rh", name="", loudness=""),
        "0VjIjW4GlUZAMYd2vXMi3b,Short row",
    )

    response = upload(client, content)

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["accepted"] == 1
    assert report["rejected_count"] == 5
    rejected = {r["row"]: r for r in report["rejected"]}
    assert rejected[2] == {
        "row": 2,
        "track_id": IDS[1],
        "errors": ["danceability 1.7 is outside [0, 1]"],
    }
    assert rejected[3]["errors"] == ["tempo 'fast' is not a number"]
    assert rejected[4]["track_id"] == "not-an-id"
    assert "not a 22-character base62 Spotify id" in rejected[4]["errors"][0]
    assert rejected[5]["errors"] == [
        "name is required",
        "loudness is required",
    ]
    assert "danceability is required" in rejected[6]["errors"]
    assert read_master_dataset(client.app.state.settings.lake_uri).num_rows == 1


def test_duplicate_ids_keep_the_first(client: TestClient) -> None:
    content = kaggle_csv(
        kaggle_row(IDS[0], name="First"),
        kaggle_row(IDS[1]),
        kaggle_row(IDS[0], name="Second"),
    )

    report = upload(client, content).json()

    assert report["accepted"] == 2
    assert report["rejected"] == [
        {
            "row": 3,
            "track_id": IDS[0],
            "errors": [f"track_id {IDS[0]} already appears in row 1 of this upload"],
        }
    ]
    lake = read_master_dataset(client.app.state.settings.lake_uri)
    names = lake.filter(pc.equal(lake.column("track_id"), IDS[0])).column("name").to_pylist()
    assert names == ["First"]


def test_windows_1252_file_is_read_with_a_warning(client: TestClient) -> None:
    content = kaggle_csv(kaggle_row(IDS[0], name="Café Señor")).decode().encode("cp1252")

    response = upload(client, content)

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["warnings"] and "not valid UTF-8" in report["warnings"][0]
    assert "cp1252" in report["warnings"][0]
    lake = read_master_dataset(client.app.state.settings.lake_uri)
    assert lake.column("name").to_pylist() == ["Café Señor"]


def test_huge_field_is_a_row_error(broker, make_client) -> None:
    client = make_client(broker, max_field_bytes=4096)
    content = kaggle_csv(
        kaggle_row(IDS[0]), kaggle_row(IDS[1], name="x" * 10_000), kaggle_row(IDS[2])
    )

    response = upload(client, content)

    assert response.status_code == 202, response.text
    report = response.json()
    assert report["accepted"] == 2
    assert report["rejected"][0]["row"] == 2
    assert "field larger than field limit" in report["rejected"][0]["errors"][0]


def test_no_valid_row_is_422_with_the_rejections(client: TestClient) -> None:
    response = upload(client, kaggle_csv(kaggle_row(IDS[0], energy="2")))

    body = assert_problem(response, 422)
    assert body["rejected"] == [
        {"row": 1, "track_id": IDS[0], "errors": ["energy 2 is outside [0, 1]"]}
    ]


def test_whole_file_problems(client: TestClient, tmp_path: Path) -> None:
    cases = {
        "empty": (b"", 422, "empty"),
        "blank lines": (b"\n\n  \n", 422, "empty"),
        "header only": (KAGGLE_HEADER.encode() + b"\n", 422, "no data rows"),
        "unknown layout": (b"title,artist\nA,B\n", 422, "unknown CSV layout"),
        "missing columns": (b"id,name,artists\n" + IDS[0].encode() + b",A,B\n", 422, "tempo"),
        "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4, 422, "binary"),
        "utf-16": (KAGGLE_HEADER.encode("utf-16"), 422, "UTF-16"),
    }
    for name, (content, status, words) in cases.items():
        body = assert_problem(upload(client, content), status)
        assert words in body["detail"], (name, body)
    assert read_master_dataset(str(tmp_path / "lake")).num_rows == 0


def test_missing_columns_are_named(client: TestClient) -> None:
    body = assert_problem(upload(client, b"id,name,artists\nx,y,z\n"), 422)
    assert body["detail"] == (
        "kaggle layout is missing required columns: danceability, energy, loudness, "
        "speechiness, acousticness, instrumentalness, liveness, valence, tempo"
    )


def test_request_problems(client: TestClient) -> None:
    url = "/api/v1/songs/upload"
    wrong_type = client.post(url, content=b"id\n", headers={"content-type": "text/csv"})
    assert "multipart/form-data" in assert_problem(wrong_type, 415)["detail"]

    no_file = client.post(url, files={"other": ("a.csv", b"id\n", "text/csv")})
    assert "'file'" in assert_problem(no_file, 422)["detail"]

    not_a_file = client.post(url, data={"file": "id,name"}, files={"x": ("a", b"", "text/plain")})
    assert assert_problem(not_a_file, 422)

    broken = client.post(url, content=b"garbage", headers={"content-type": "multipart/form-data"})
    assert broken.status_code < 500
    assert broken.headers["content-type"].startswith(PROBLEM)


def test_body_over_the_limit_is_413(broker, make_client) -> None:
    client = make_client(broker, max_upload_bytes=10_000)
    big = kaggle_csv(*(kaggle_row(IDS[0]) for _ in range(100)))
    assert len(big) > 10_000

    declared = assert_problem(upload(client, big), 413)
    assert "10000 bytes" in declared["detail"]
    assert declared["max_upload_bytes"] == 10_000

    # Without Content-Length (chunked), the bytes are counted while reading.
    def chunks():
        boundary = b"--b0undary"
        yield (
            boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n\r\n'
        )
        for i in range(0, len(big), 1000):
            yield big[i : i + 1000]
        yield b"\r\n" + boundary + b"--\r\n"

    streamed = client.post(
        "/api/v1/songs/upload",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert "10000 bytes" in assert_problem(streamed, 413)["detail"]
    assert read_master_dataset(client.app.state.settings.lake_uri).num_rows == 0


def test_too_many_rows_is_413(broker, make_client) -> None:
    client = make_client(broker, max_rows=3)
    rows = [kaggle_row(i) for i in IDS] + [kaggle_row("4iV5W9uYEdYUVa79Axb7Rh")]

    body = assert_problem(upload(client, kaggle_csv(*rows)), 413)
    assert body["max_rows"] == 3
    assert "max_rows=3" in body["detail"]
    assert upload(client, kaggle_csv(*rows[:3])).status_code == 202


def test_openapi_documents_the_public_paths(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    upload_op = spec["paths"]["/api/v1/songs/upload"]["post"]
    assert upload_op["operationId"] == "songs-upload_csv"
    assert "multipart/form-data" in upload_op["requestBody"]["content"]
    assert spec["paths"]["/api/v1/songs"]["post"]["operationId"] == "songs-ingest_json"
    assert "202" in upload_op["responses"]
    assert json.dumps(spec)  # serialisable as the gateway will merge it
