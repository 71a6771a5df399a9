"""Scoped API keys: stored hashed, checked per scope, created, rotated and revoked while the
gateway runs (through the key file, as ``emergify keys`` does, and through the admin API)."""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from emergify_cli.main import app as cli
from emergify_gateway.keystore import KeyFile, KeyFileError, KeyStore, hash_key, key_id_of
from emergify_gateway.main import create_app
from emergify_gateway.routes import Access

SONGS = [{"track_id": "4uLU6hMCjMI75M1A2tKUQC", "name": "n", "artists": ["a"]}]
UPLOAD = {"files": {"file": ("a.csv", b"x\n", "text/csv")}}


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "api-keys.json"


@pytest.fixture
def keyed_gateway(make_gateway: Callable[..., TestClient], key_path: Path) -> TestClient:
    """A running gateway reading scoped keys from ``key_path``."""
    return make_gateway(api_keys_file=key_path)


def key_header(key: str) -> dict[str, str]:
    return {"X-API-Key": key}


def test_key_file_keeps_only_hashes_with_owner_only_permissions(key_path: Path) -> None:
    issued = KeyFile(key_path).create("dashboard", {Access.READ})
    assert issued.key.startswith(f"emk_{issued.record.id}_")
    assert key_id_of(issued.key) == issued.record.id
    assert len(issued.key) > 40  # 32 random bytes after the id
    text = key_path.read_text()
    assert issued.key not in text
    assert issued.key.split("_", 2)[2] not in text  # not even the secret part
    stored = json.loads(text)["keys"][0]
    assert stored["sha256"] == hash_key(issued.key)
    assert stored["scopes"] == ["recs:read"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    # No temporary files left behind by the atomic replace.
    assert sorted(p.name for p in key_path.parent.iterdir()) == [
        "api-keys.json",
        "api-keys.json.lock",
    ]
    assert "sha256" not in issued.record.public()


def test_scopes_decide_what_a_key_may_call(keyed_gateway: TestClient, key_path: Path) -> None:
    keys = KeyFile(key_path)
    reader = key_header(keys.create("reader", {Access.READ}).key)
    writer = key_header(keys.create("uploader", {Access.WRITE}).key)
    both = key_header(keys.create("both", {Access.READ, Access.WRITE}).key)
    admin = key_header(keys.create("ops", {Access.ADMIN}).key)

    assert keyed_gateway.get("/api/v1/catalog", headers=reader).status_code == 200
    assert keyed_gateway.post("/api/v1/recommendations", json={"seeds": ["a"]}, headers=reader)
    denied = keyed_gateway.post("/api/v1/songs", json=SONGS, headers=reader)
    assert denied.status_code == 403
    assert denied.json()["missing_scope"] == "catalog:write"

    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=writer).status_code == 202
    assert keyed_gateway.post("/api/v1/songs/upload", headers=writer, **UPLOAD).status_code == 202
    read_denied = keyed_gateway.get("/api/v1/clusters", headers=writer)
    assert read_denied.status_code == 403 and read_denied.json()["missing_scope"] == "recs:read"
    assert keyed_gateway.get("/api/v1/spotify/me", headers=writer).status_code == 403
    retrain = keyed_gateway.post("/api/v1/model/retrain", headers=writer)
    assert retrain.status_code == 403 and retrain.json()["missing_scope"] == "admin"

    assert keyed_gateway.get("/api/v1/model", headers=both).status_code == 200
    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=both).status_code == 202
    assert keyed_gateway.post("/api/v1/model/retrain", headers=both).status_code == 403

    # admin implies every other scope.
    assert keyed_gateway.get("/api/v1/catalog", headers=admin).status_code == 200
    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=admin).status_code == 202
    assert keyed_gateway.post("/api/v1/model/retrain", headers=admin).status_code == 202


def test_upstreams_and_logs_see_only_the_key_id(
    keyed_gateway: TestClient, key_path: Path, upstreams: dict[str, Any]
) -> None:
    issued = KeyFile(key_path).create("reader", {Access.READ})
    bearer = {"Authorization": f"Bearer {issued.key}", "X-Request-ID": "scoped-1"}
    with structlog.testing.capture_logs() as logs:
        assert keyed_gateway.get("/api/v1/model", headers=bearer).status_code == 200
    seen = upstreams["recommender"].request_with_id("scoped-1")["headers"]
    assert seen["x-emergify-principal"] == issued.record.id
    assert issued.key not in json.dumps(seen)
    [line] = [entry for entry in logs if entry["event"] == "request"]
    assert line["key_id"] == issued.record.id
    assert issued.key not in repr(logs)


def test_keys_change_without_a_restart(keyed_gateway: TestClient, key_path: Path) -> None:
    keys = KeyFile(key_path)
    # The file does not exist yet when the gateway starts; a key created now works at once.
    assert not key_path.exists()
    first = keys.create("dashboard", {Access.READ})
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(first.key)).status_code == 200

    keys.revoke(first.record.id)
    revoked = keyed_gateway.get("/api/v1/catalog", headers=key_header(first.key))
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]

    # A forged key with a real id but another secret is refused.
    second = keys.create("dashboard 2", {Access.READ})
    forged = f"emk_{second.record.id}_{'A' * 43}"
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(forged)).status_code == 401

    # Rotation with a grace period: both keys work; then the old one's grace is over.
    rotated = keys.rotate(second.record.id, grace_seconds=3600)
    assert rotated.record.scopes == second.record.scopes
    assert rotated.record.rotated_from == second.record.id
    for key in (second.key, rotated.key):
        assert keyed_gateway.get("/api/v1/catalog", headers=key_header(key)).status_code == 200
    # The same rotation run two hours ago: its grace period ended an hour ago.
    past = KeyFile(key_path, clock=lambda: datetime.now(UTC) - timedelta(hours=2))
    again = past.rotate(rotated.record.id, grace_seconds=3600)
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(rotated.key)).status_code == 401
    # (created "two hours ago" too, but new keys have no expiry)
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(again.key)).status_code == 200

    # Rotation without grace stops the old key at once.
    latest = keys.rotate(again.record.id)
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(again.key)).status_code == 401
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(latest.key)).status_code == 200

    # Deleting the file revokes every key in it; the environment's keys still work.
    key_path.unlink()
    assert keyed_gateway.get("/api/v1/catalog", headers=key_header(latest.key)).status_code == 401


def test_environment_keys_keep_working(keyed_gateway: TestClient, key_path: Path) -> None:
    KeyFile(key_path).create("someone", {Access.READ})
    admin = key_header("test-admin-key-0123456789abcdef")
    reader = key_header("test-read-key-0123456789abcdef")
    assert keyed_gateway.post("/api/v1/model/retrain", headers=admin).status_code == 202
    assert keyed_gateway.get("/api/v1/catalog", headers=reader).status_code == 200
    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=reader).status_code == 403


def test_grace_period_ends_on_the_clock(key_path: Path) -> None:
    now = [datetime(2030, 1, 1, tzinfo=UTC)]
    keys = KeyFile(key_path, clock=lambda: now[0])
    store = KeyStore(key_path, clock=lambda: now[0])
    old = keys.create("batch job", {Access.WRITE})
    new = keys.rotate(old.record.id, grace_seconds=60)
    now[0] += timedelta(seconds=59)
    assert store.lookup(old.key) is not None and store.lookup(new.key) is not None
    now[0] += timedelta(seconds=1)
    assert store.lookup(old.key) is None
    assert store.lookup(new.key) is not None
    with pytest.raises(ValueError, match="revoked or expired"):
        keys.rotate(old.record.id)


def test_a_broken_key_file_keeps_the_last_good_keys(key_path: Path) -> None:
    keys = KeyFile(key_path)
    issued = keys.create("reader", {Access.READ})
    store = KeyStore(key_path)
    assert store.lookup(issued.key) is not None
    key_path.write_text("{not json")
    assert store.lookup(issued.key) is not None
    with pytest.raises(KeyFileError, match="not a valid API key file"):
        keys.read()


def test_admin_api_manages_keys(keyed_gateway: TestClient, key_path: Path) -> None:
    admin = key_header("test-admin-key-0123456789abcdef")
    created = keyed_gateway.post(
        "/api/v1/admin/keys",
        json={"name": "dashboard", "scopes": ["recs:read", "catalog:write"]},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    body = created.json()
    key, key_id = body["key"], body["id"]
    assert body["scopes"] == ["recs:read", "catalog:write"]
    assert created.headers["cache-control"] == "no-store"
    assert key not in key_path.read_text()

    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=key_header(key)).is_success
    # The new key lacks admin: it cannot manage keys.
    listing = keyed_gateway.get("/api/v1/admin/keys", headers=key_header(key))
    assert listing.status_code == 403 and listing.json()["missing_scope"] == "admin"
    assert keyed_gateway.get("/api/v1/admin/keys").status_code == 401

    listed = keyed_gateway.get("/api/v1/admin/keys", headers=admin).json()["items"]
    assert [item["id"] for item in listed] == [key_id]
    assert "key" not in listed[0] and "sha256" not in listed[0]

    rotated = keyed_gateway.post(
        f"/api/v1/admin/keys/{key_id}/rotate", json={"grace_seconds": 600}, headers=admin
    )
    assert rotated.status_code == 201
    new_key = rotated.json()["key"]
    assert rotated.json()["rotated_from"] == key_id
    for k in (key, new_key):
        assert keyed_gateway.get("/api/v1/model", headers=key_header(k)).status_code == 200

    revoked = keyed_gateway.delete(f"/api/v1/admin/keys/{key_id}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    assert keyed_gateway.get("/api/v1/model", headers=key_header(key)).status_code == 401
    assert keyed_gateway.get("/api/v1/model", headers=key_header(new_key)).status_code == 200

    missing = keyed_gateway.delete("/api/v1/admin/keys/0123456789ab", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    bad = keyed_gateway.post(
        "/api/v1/admin/keys", json={"name": "x", "scopes": ["root"]}, headers=admin
    )
    assert bad.status_code == 422
    assert bad.headers["content-type"] == "application/problem+json"
    again = keyed_gateway.post(f"/api/v1/admin/keys/{key_id}/rotate", headers=admin)
    assert again.status_code == 409


def test_rate_limit_is_per_key_id_from_any_address(
    make_settings: Callable[..., Any], serve: Callable[[Any], Any], key_path: Path
) -> None:
    """Real sockets from two loopback addresses: each key and each address has its bucket."""
    keys = KeyFile(key_path)
    a = key_header(keys.create("a", {Access.READ}).key)
    b = key_header(keys.create("b", {Access.READ}).key)
    served = serve(
        create_app(
            make_settings(api_keys_file=key_path, rate_limit_per_minute=1, rate_limit_burst=2)
        )
    )

    def client(address: str) -> httpx.Client:
        transport = httpx.HTTPTransport(local_address=address)
        return httpx.Client(base_url=served.url, transport=transport, timeout=10)

    with client("127.0.0.1") as one, client("127.0.0.2") as two:
        assert one.get("/api/v1/model", headers=a).status_code == 200
        assert one.get("/api/v1/model", headers=a).status_code == 200
        # Key a's bucket is empty: from another address it is still limited...
        limited = two.get("/api/v1/model", headers=a)
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        # ...while key b, from that address, has its own bucket.
        assert two.get("/api/v1/model", headers=b).status_code == 200
        # A key holder is not limited per address as well: key b still works from 127.0.0.1.
        assert one.get("/api/v1/model", headers=b).status_code == 200


def test_cli_creates_lists_rotates_and_revokes(keyed_gateway: TestClient, key_path: Path) -> None:
    runner = CliRunner()

    def emergify(*args: str) -> str:
        result = runner.invoke(cli, ["keys", *args, "--file", str(key_path)])
        assert result.exit_code == 0, result.output
        return result.output

    created = emergify("create", "--name", "uploader", "--scope", "catalog:write")
    [key] = [line for line in created.splitlines() if line.startswith("emk_")]
    key_id = key_id_of(key)
    assert key_id is not None
    assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=key_header(key)).is_success

    listing = emergify("list")
    assert key_id in listing and "uploader" in listing and "catalog:write" in listing
    assert key not in listing and hash_key(key) not in listing

    rotated = emergify("rotate", key_id, "--grace-seconds", "300")
    [new_key] = [line for line in rotated.splitlines() if line.startswith("emk_")]
    for k in (key, new_key):
        assert keyed_gateway.post("/api/v1/songs", json=SONGS, headers=key_header(k)).is_success

    emergify("revoke", key_id)
    assert (
        keyed_gateway.post("/api/v1/songs", json=SONGS, headers=key_header(key)).status_code == 401
    )

    refused = runner.invoke(cli, ["keys", "create", "--name", "x", "--scope", "root",
                                  "--file", str(key_path)])  # fmt: skip
    assert refused.exit_code == 2 and "not a scope" in refused.output
