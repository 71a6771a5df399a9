"""Body limits per route, a whole-request deadline, and refusals every client can read.

The gateway here is served by uvicorn exactly as ``python -m emergify_gateway`` serves it
(:func:`emergify_gateway.__main__.uvicorn_options`), so what a client sees is what a real
deployment answers.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

SIXTY_MIB = 60 * 1024 * 1024
ADMIN_KEY = "test-admin-key-0123456789abcdef"  # the admin key of tests/gateway/conftest.py


def _urllib_post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        assert exc.headers["content-type"] == "application/problem+json"
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("key", [None, ADMIN_KEY], ids=["no-key", "admin-key"])
def test_urllib_reads_the_refusal_of_a_60_mib_upload(
    served_gateway: Callable[..., str], key: str | None
) -> None:
    base = served_gateway()
    headers = {"Content-Type": "text/csv"} | ({"X-API-Key": key} if key else {})
    status, problem = _urllib_post(f"{base}/api/v1/songs/upload", b"x" * SIXTY_MIB, headers)
    assert status == (401 if key is None else 413)
    assert problem["status"] == status
    assert problem["detail"]


@pytest.mark.parametrize("key", [None, ADMIN_KEY], ids=["no-key", "admin-key"])
def test_httpx_reads_the_refusal_of_a_60_mib_upload(
    served_gateway: Callable[..., str], key: str | None
) -> None:
    base = served_gateway()
    headers = {"Content-Type": "text/csv"} | ({"X-API-Key": key} if key else {})
    response = httpx.post(
        f"{base}/api/v1/songs/upload", content=b"x" * SIXTY_MIB, headers=headers, timeout=120
    )
    assert response.status_code == (401 if key is None else 413)
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == response.status_code


def test_json_route_refuses_a_body_over_the_json_limit_before_forwarding(
    served_gateway: Callable[..., str], upstreams: dict[str, Any]
) -> None:
    base = served_gateway()
    seeds = ["x" * 22] * 5000  # about 130 KiB of JSON: well under 50 MiB, over 64 KiB
    before = len(upstreams["recommender"].seen)
    response = httpx.post(
        f"{base}/api/v1/recommendations",
        json={"seeds": seeds},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:300]
    assert response.json()["max_bytes"] == 64 * 1024
    assert len(upstreams["recommender"].seen) == before  # never reached the recommender


def test_chunked_json_body_over_the_limit_is_refused_while_reading(
    served_gateway: Callable[..., str], upstreams: dict[str, Any]
) -> None:
    base = served_gateway()

    def chunks() -> Iterator[bytes]:
        yield b'{"seeds": ['
        for _ in range(10_000):
            yield b'"aaaaaaaaaaaaaaaaaaaaaa",'
        yield b'"b"]}'

    before = len(upstreams["recommender"].seen)
    response = httpx.post(
        f"{base}/api/v1/recommendations",
        content=chunks(),
        headers={"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:300]
    assert len(upstreams["recommender"].seen) == before


def test_songs_json_route_keeps_the_upload_limit(served_gateway: Callable[..., str]) -> None:
    base = served_gateway()
    songs = [{"track_id": f"{i:022d}", "name": "n", "artists": ["a"]} for i in range(3000)]
    response = httpx.post(
        f"{base}/api/v1/songs", json=songs, headers={"X-API-Key": ADMIN_KEY}, timeout=60
    )
    assert response.status_code == 202, response.text[:300]
    assert response.json()["accepted"] == 3000


def test_slow_drip_body_gets_a_408_problem(served_gateway: Callable[..., str]) -> None:
    base = served_gateway(request_deadline_seconds=1.0)
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/songs/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            + f"X-API-Key: {ADMIN_KEY}\r\nContent-Type: text/csv\r\n".encode()
            + b"Content-Length: 100000\r\n\r\n"
        )
        answer = b""
        # One byte every 0.2 s: far too slow to finish within the deadline.
        for _ in range(100):
            try:
                sock.sendall(b"x")
            except OSError:
                break
            sock.settimeout(0.2)
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer:
                break
        sock.settimeout(5)
        while b'"}' not in answer and b"}" not in answer.split(b"\r\n\r\n", 1)[-1]:
            data = sock.recv(65536)
            if not data:
                break
            answer += data
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"application/problem+json" in head
    assert json.loads(body)["status"] == 408


def test_deadline_does_not_cut_a_fast_upload(served_gateway: Callable[..., str]) -> None:
    base = served_gateway(request_deadline_seconds=30.0)
    response = httpx.post(
        f"{base}/api/v1/songs/upload",
        files={"file": ("songs.csv", b"a,b\n" * 100_000, "text/csv")},
        headers={"X-API-Key": ADMIN_KEY},
        timeout=60,
    )
    assert response.status_code == 202, response.text[:300]
    assert response.json()["size"] == 400_000


def test_gateways_own_json_route_refuses_a_large_body_while_reading(
    served_gateway: Callable[..., str],
) -> None:
    base = served_gateway()

    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(2000):
            yield b"a" * 100
        yield b'", "scopes": ["recs:read"]}'

    response = httpx.post(
        f"{base}/api/v1/admin/keys",
        content=chunks(),
        headers={"X-API-Key": ADMIN_KEY, "Content-Type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413, response.text[:300]
    assert response.json()["max_bytes"] == 64 * 1024
