"""The dashboard's own key: read-only, never the admin key, one rate-limit bucket per viewer,
uploads only when turned on and only for a signed-in listener."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from emergify_contracts import session
from emergify_contracts.internal_auth import VIEWER_HEADER
from emergify_gateway.main import create_app
from emergify_gateway.security import AuthNotConfiguredError

DASHBOARD_KEY = "dashboard-own-key-0123456789abcdef"
SECRET = "gateway-dashboard-session-secret-0123456789"
CSV = {"file": ("songs.csv", b"id,name\n", "text/csv")}


def _dashboard(viewer: str | None = None) -> dict[str, str]:
    headers = {"X-API-Key": DASHBOARD_KEY}
    if viewer:
        headers[VIEWER_HEADER] = viewer
    return headers


@pytest.fixture
def dashboard_gateway(make_gateway: Callable[..., TestClient]) -> Callable[..., TestClient]:
    def make(**overrides: Any) -> TestClient:
        return make_gateway(dashboard_api_key=DASHBOARD_KEY, session_secret=SECRET, **overrides)

    return make


def test_the_dashboard_key_reads_but_cannot_write_or_administer(dashboard_gateway) -> None:
    gateway = dashboard_gateway()
    assert gateway.get("/api/v1/catalog", headers=_dashboard()).status_code == 200
    upload = gateway.post("/api/v1/songs/upload", headers=_dashboard(), files=CSV)
    assert upload.status_code == 403 and upload.json()["missing_scope"] == "catalog:write"
    retrain = gateway.post("/api/v1/model/retrain", headers=_dashboard())
    assert retrain.status_code == 403
    assert gateway.get("/api/v1/admin/keys", headers=_dashboard()).status_code == 403


def test_every_viewer_has_a_bucket_of_its_own(dashboard_gateway) -> None:
    gateway = dashboard_gateway(rate_limit_per_minute=6, rate_limit_burst=2)
    alice, bob = "viewer-alice-0123456789", "viewer-bob-0123456789ab"
    for _ in range(2):
        assert gateway.get("/api/v1/catalog", headers=_dashboard(alice)).status_code == 200
    assert gateway.get("/api/v1/catalog", headers=_dashboard(alice)).status_code == 429
    # Bob, on the same dashboard (same address, same key), is not held up by Alice.
    for _ in range(2):
        assert gateway.get("/api/v1/catalog", headers=_dashboard(bob)).status_code == 200
    assert gateway.get("/api/v1/catalog", headers=_dashboard(bob)).status_code == 429


def test_the_viewer_header_counts_only_with_the_dashboard_key(dashboard_gateway, reader) -> None:
    gateway = dashboard_gateway(rate_limit_per_minute=6, rate_limit_burst=2)
    for n in range(2):
        viewer = {VIEWER_HEADER: f"made-up-viewer-{n:012d}"}
        assert gateway.get("/api/v1/catalog", headers=reader | viewer).status_code == 200
    # A fresh viewer id does not buy another key holder a fresh bucket.
    fresh = {VIEWER_HEADER: "yet-another-viewer-0123"}
    assert gateway.get("/api/v1/catalog", headers=reader | fresh).status_code == 429


def test_uploads_need_the_setting_and_a_signed_in_listener(dashboard_gateway) -> None:
    cookie = {session.SESSION_COOKIE: session.sign("demo", SECRET, 3600)}
    off = dashboard_gateway()
    off.cookies.update(cookie)
    assert off.post("/api/v1/songs/upload", headers=_dashboard(), files=CSV).status_code == 403

    on = dashboard_gateway(dashboard_uploads=True)
    # Nobody signed in: the dashboard's key alone still may not write.
    assert on.post("/api/v1/songs/upload", headers=_dashboard(), files=CSV).status_code == 403
    on.cookies.update({session.SESSION_COOKIE: "demo.1.forged"})
    assert on.post("/api/v1/songs/upload", headers=_dashboard(), files=CSV).status_code == 403
    on.cookies.update(cookie)
    assert on.post("/api/v1/songs/upload", headers=_dashboard(), files=CSV).status_code == 202
    # The listener's cookie alone (no dashboard key) is read-only, as before.
    assert on.post("/api/v1/songs/upload", files=CSV).status_code == 403


def test_the_dashboard_key_may_not_be_the_admin_key_nor_short(make_settings) -> None:
    admin_key = make_settings().admin_key()
    with pytest.raises(AuthNotConfiguredError, match="must not be the admin key"):
        create_app(make_settings(dashboard_api_key=admin_key))
    with pytest.raises(AuthNotConfiguredError, match="EMERGIFY_DASHBOARD_API_KEY"):
        create_app(make_settings(dashboard_api_key="short"))


@pytest.mark.parametrize(
    ("setting", "value"),
    [("admin_api_key", "admin-0123456789"), ("read_api_keys", "a-long-enough-read-key-0123,tiny")],
)
def test_short_admin_or_read_keys_refuse_to_start(make_settings, setting: str, value: str) -> None:
    with pytest.raises(AuthNotConfiguredError, match="at least 24 characters"):
        create_app(make_settings(**{setting: value}))
