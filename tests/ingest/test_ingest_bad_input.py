"""The bad-upload corpus (tests/ingest/bad_uploads/) through the real ingest service.

Every case gets a clear 4xx problem or a 202 naming each rejected row with its reason; never
a 5xx; and every valid row of the upload reaches both the songs topic and the master dataset.
Corpus convention: a valid row's track id starts with ``Ok``, an invalid row's with ``Bad``,
so the valid ids of a file are read from the file itself. The README lists every case.
"""

from __future__ import annotations

import gzip
import re
import resource
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from httpx import Response

from emergify_ingest.master_dataset import read_master_dataset

CORPUS = Path(__file__).parent / "bad_uploads"
PROBLEM = "application/problem+json"
CSV_URL = "/api/v1/songs/upload"
JSON_URL = "/api/v1/songs"
MiB = 1024 * 1024
OK_ID = re.compile(rb"Ok[0-9A-Za-z]{20}")


@dataclass(frozen=True)
class Case:
    """One corpus case: what is sent and what ingest must answer."""

    name: str
    status: int
    #: 4xx: words the problem's detail must hold. 202: {row: words in that row's reason}.
    expect: str | dict[int, str]
    build: Callable[[], bytes] | None = None  # generated content; else the corpus file `name`
    endpoint: str = CSV_URL
    headers: dict[str, str] = field(default_factory=dict)
    settings: dict[str, object] = field(default_factory=dict)
    warning: str | None = None

    def content(self) -> bytes:
        return self.build() if self.build else (CORPUS / self.name).read_bytes()


def corpus_id(slug: str, n: int) -> str:
    """A 22-character track id in the corpus convention: ``corpus_id("Okhuge", 1)``."""
    return (slug + "0" * 22)[:18] + f"{n:04d}"


def _kaggle(*rows: bytes) -> bytes:
    header = (CORPUS / "unknown_headers.csv").read_bytes().split(b"\n", 1)[0]
    return b"\n".join([header.rsplit(b",Mood", 1)[0], *rows]) + b"\n"


def _row(track_id: str, name: bytes = b"Carve") -> bytes:
    # A valid Kaggle row (the first line of wrong_types.csv) with another id and name.
    first = (CORPUS / "wrong_types.csv").read_bytes().split(b"\n")[1]
    cells = first.split(b",", 2)
    return track_id.encode() + b"," + name + b"," + cells[2]


def huge_field() -> bytes:
    """A 2 MiB name: over the default max_field_bytes (1 MiB) of the csv reader."""
    return _kaggle(
        _row(corpus_id("OkhugeField", 1)),
        _row(corpus_id("BadhugeField", 2), b"x" * (2 * MiB)),
        _row(corpus_id("OkhugeField", 3)),
    )


def long_name() -> bytes:
    """A 600-character name: a field the reader takes, over the song's 500-character limit."""
    return _kaggle(_row(corpus_id("Oklongname", 1)), _row(corpus_id("Badlongname", 2), b"n" * 600))


def gzip_bomb() -> bytes:
    """About 1 MiB of gzip that inflates to 1 GiB: one member of 8 MiB of zeros, 128 times."""
    member = gzip.compress(_kaggle(_row(corpus_id("Badbomb", 1))) + bytes(8 * MiB), 9)
    return member * 128


def over_the_limit() -> bytes:
    """A valid CSV of about 96 KiB, sent to an app whose max_upload_bytes is 64 KiB."""
    return _kaggle(*(_row(corpus_id("Badlimit", n)) for n in range(400)))


def deeply_nested() -> bytes:
    return b"[" * 100_000 + b"]" * 100_000


GZIP = {"content-encoding": "gzip"}

CASES = [
    # Whole-file problems: 4xx, nothing saved.
    Case("empty.csv", 422, "empty"),
    Case("blank_lines_only.csv", 422, "empty"),
    Case("header_only.csv", 422, "no data rows"),
    Case("header_only_bom_crlf.csv", 422, "no data rows"),
    Case("missing_header.csv", 422, "unknown CSV layout"),
    Case("missing_required_columns.csv", 422, "missing required columns: loudness"),
    Case("unknown_layout.csv", 422, "unknown CSV layout"),
    Case("semicolon_delimited.csv", 422, "separated by semicolons"),
    Case("tab_delimited.tsv", 422, "separated by tabs"),
    Case("repeated_column.csv", 422, "'name' appears more than once"),
    Case("utf16.csv", 422, "UTF-16"),
    Case("json_as_csv.csv", 422, "JSON, not CSV"),
    Case("image.png", 422, "binary"),
    Case("binary.bin", 422, "binary"),
    Case("songs.zip", 422, "ZIP archive"),
    Case("gzip_bomb.csv.gz", 422, "gzip-compressed", build=gzip_bomb),
    Case("gzip_bomb.csv+content-encoding", 415, "Content-Encoding 'gzip'", gzip_bomb, headers=GZIP),
    Case("all_rows_invalid.csv", 422, "none of the 2 records"),
    Case("too_many_rows.csv", 413, "max_rows=5", settings={"max_rows": 5}),
    Case(
        "over_the_limit.csv",
        413,
        "65536 bytes",
        build=over_the_limit,
        settings={"max_upload_bytes": 64 * 1024},
    ),
    # JSON bodies for POST /api/v1/songs.
    Case("deeply_nested.json", 422, "nested too deeply", deeply_nested, JSON_URL),
    Case("huge_integer.json", 422, "4300", endpoint=JSON_URL),
    Case("not_utf8.json", 422, "not UTF-8", endpoint=JSON_URL),
    Case("json_scalar.json", 422, "is a str", endpoint=JSON_URL),
    Case("json_empty_list.json", 422, "empty", endpoint=JSON_URL),
    Case(
        "gzip_bomb.json+content-encoding",
        415,
        "not decompressed",
        gzip_bomb,
        JSON_URL,
        headers=GZIP,
    ),
    # Row problems: 202, each bad row named with its reason, every valid row kept.
    Case("unknown_headers.csv", 202, {}),
    Case(
        "wrong_types.csv",
        202,
        {
            2: "tempo 'fast' is not a number",
            3: "danceability 'high' is not a number",
            4: "duration_ms '3:45' is not a number",
            5: "popularity '12.5' is not a whole number",
            6: "explicit 'maybe' is not true/false",
            7: "key 'C#' is not a number",
            8: "loudness '-7,5' is not a number",
            9: "release_date 'yesterday' is not YYYY",
            10: "energy '0x1F' is not a number",
        },
    ),
    Case(
        "out_of_range.csv",
        202,
        {
            2: "danceability 1.7 is outside [0, 1]",
            3: "energy -0.1 is outside [0, 1]",
            4: "loudness -80 dB is outside [-60, 5]",
            5: "loudness 6 dB is outside [-60, 5]",
            6: "tempo -5 BPM must be a finite number",
            7: "popularity 101 is outside [0, 100]",
            8: "key 12 is outside [-1, 11]",
            9: "mode 2 is outside [0, 1]",
            10: "time_signature 9 is outside [0, 7]",
            11: "valence nan is outside [0, 1]",
            12: "tempo inf BPM must be a finite number",
            13: "duration_ms -1 is outside [0, 86400000]",
        },
    ),
    Case("bom_crlf_exportify.csv", 202, {}),
    Case("latin1.csv", 202, {}, warning="not valid UTF-8"),
    Case("quoted_newlines.csv", 202, {3: "energy 7 is outside [0, 1]"}),
    Case("unclosed_quote.csv", 202, {2: "is not a number"}),
    Case("huge_field.csv", 202, {2: "field larger than field limit"}, build=huge_field),
    Case("long_name.csv", 202, {2: "name is longer than 500 characters"}, build=long_name),
    Case(
        "duplicate_ids.csv",
        202,
        {
            2: "already appears in row 1 of this upload",
            3: "energy 9 is outside [0, 1]",
            6: "already appears in row 5 of this upload",
        },
    ),
    Case(
        "ragged_rows.csv",
        202,
        {2: "more cells than the header has columns", 3: "danceability is required"},
    ),
    Case("blank_and_whitespace_rows.csv", 202, {2: "name is required", 4: "artists is required"}),
    Case("nul_in_a_row.csv", 202, {60: "NUL character"}),
    Case("formula_injection.csv", 202, {}),
]


def send(client: TestClient, case: Case) -> Response:
    content = case.content()
    if case.endpoint == JSON_URL:
        headers = {"content-type": "application/json", **case.headers}
        return client.post(JSON_URL, content=content, headers=headers)
    if case.headers:
        # A hand-made multipart body, so the declared encoding covers the bytes as sent.
        body = (
            b"--b0undary\r\n"
            b'Content-Disposition: form-data; name="file"; filename="songs.csv"\r\n'
            b"Content-Type: text/csv\r\n\r\n" + content + b"\r\n--b0undary--\r\n"
        )
        headers = {"content-type": "multipart/form-data; boundary=b0undary", **case.headers}
        return client.post(CSV_URL, content=body, headers=headers)
    return client.post(CSV_URL, files={"file": (case.name, content, "text/csv")})


def valid_ids(content: bytes) -> set[str]:
    """The track ids of the valid rows: the corpus names them ``Ok...``."""
    return {m.decode() for m in OK_ID.findall(content)}


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus_case(case: Case, broker, make_client, consume) -> None:
    client = make_client(broker, **case.settings)
    settings = client.app.state.settings
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    response = send(client, case)

    assert response.status_code < 500, response.text
    assert response.status_code == case.status, response.text[:2000]
    # A compressed body is refused unopened: the process never held it inflated (KiB).
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024
    if case.status != 202:
        assert response.headers["content-type"].startswith(PROBLEM)
        problem = response.json()
        assert problem["status"] == case.status and problem["title"]
        assert isinstance(case.expect, str) and case.expect in problem["detail"], problem
        assert read_master_dataset(settings.lake_uri).num_rows == 0
        return

    report = response.json()
    assert isinstance(case.expect, dict)
    rejected = {r["row"]: r["errors"] for r in report["rejected"]}
    assert set(rejected) == set(case.expect), rejected
    for row, words in case.expect.items():
        assert any(words in error for error in rejected[row]), (row, rejected[row])
    assert report["rejected_count"] == len(case.expect)
    if case.warning:
        assert any(case.warning in w for w in report["warnings"]), report["warnings"]
    else:
        assert report["warnings"] == []

    expected = valid_ids(case.content())
    assert report["accepted"] == len(expected)
    records = consume(broker.bootstrap, settings.songs_topic, len(expected))
    assert sorted(r.key.decode() for r in records) == sorted(expected)
    lake = read_master_dataset(settings.lake_uri)
    assert sorted(lake.column("track_id").to_pylist()) == sorted(expected)


def test_formula_strings_are_kept_as_data_never_run(broker, make_client) -> None:
    """Names starting with = + - @ are stored exactly as sent (policy: data, not formulas)."""
    client = make_client(broker)
    response = send(client, Case("formula_injection.csv", 202, {}))

    assert response.status_code == 202, response.text
    lake = read_master_dataset(client.app.state.settings.lake_uri).to_pylist()
    by_id = {row["track_id"][-1]: row for row in lake}
    assert by_id["1"]["name"] == "=cmd|' /C calc'!A0"
    assert by_id["2"]["name"] == "+SUM(1+1)"
    assert by_id["2"]["artists"] == ['=HYPERLINK("http://x","y")']
    assert by_id["3"]["name"] == "-Bad Habits"
    assert by_id["4"]["name"] == "@everyone"
    # Surrounding whitespace is stripped from every text field, as for any song.
    assert by_id["5"]["name"] == "=1+1"


def test_duplicate_ids_across_uploads_both_reach_the_topic(broker, make_client, consume) -> None:
    """A track id sent again in a later upload is a new version: both are kept, latest wins."""
    client = make_client(broker)
    settings = client.app.state.settings
    first = send(client, Case("across_uploads_1.csv", 202, {}))
    second = send(client, Case("across_uploads_2.csv", 202, {}))

    assert first.status_code == second.status_code == 202, (first.text, second.text)
    assert first.json()["accepted"] == second.json()["accepted"] == 2
    records = consume(broker.bootstrap, settings.songs_topic, 4)
    keys = [r.key.decode() for r in records]
    assert sorted(keys) == sorted(
        [corpus_id("Okacross", 1)] * 2 + [corpus_id("Okacross", 2), corpus_id("Okacross", 3)]
    )
    lake = read_master_dataset(settings.lake_uri).to_pylist()
    versions = [(r["upload_id"], r["name"]) for r in lake if r["track_id"].endswith("0001")]
    assert sorted(versions) == sorted(
        [(first.json()["upload_id"], "v1"), (second.json()["upload_id"], "v2")]
    )


def test_readme_documents_every_case() -> None:
    readme = (CORPUS / "README.md").read_text()
    names = {c.name for c in CASES} | {"across_uploads_1.csv", "across_uploads_2.csv"}
    missing = [n for n in sorted(names) if f"`{n}`" not in readme]
    assert not missing, f"cases missing from bad_uploads/README.md: {missing}"
    files = {p.name for p in CORPUS.iterdir() if p.name != "README.md"}
    assert files <= names, f"corpus files without a case: {files - names}"
