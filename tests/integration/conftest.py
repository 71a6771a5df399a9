"""The whole stack, as `make up` starts it, on free ports in a temporary folder."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from testkit import drop_pg_database, new_pg_database

from emergify_cli.stack import Stack, free_port_env, services_for

LOG_LINES: list[str] = []
SAMPLE_CSV = Path(__file__).resolve().parents[2] / "data" / "every_fresh_find.csv"


def stack_env(database_url: str, admin_key: str) -> dict[str, str]:
    env = free_port_env()
    env.update(
        {
            "EMERGIFY_DATABASE_URL": database_url,
            "EMERGIFY_ADMIN_API_KEY": admin_key,
            "EMERGIFY_LOG_LEVEL": "WARNING",
            "EMERGIFY_TRIGGER_INTERVAL_SECONDS": "0.5",
        }
    )
    return env


@pytest.fixture(scope="module")
def admin_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, admin_key: str) -> Iterator[Stack]:
    """Broker + every service against the machine's PostgreSQL, like production."""
    name, url = new_pg_database("emergify_e2e")
    workdir = tmp_path_factory.mktemp("stack")
    env = stack_env(url, admin_key)
    s = Stack(env=env, workdir=workdir, sink=LOG_LINES.append)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        drop_pg_database(name)
        if LOG_LINES:
            out = Path("test-artifacts")
            out.mkdir(exist_ok=True)
            (out / "stack.log").write_text("\n".join(LOG_LINES))


@pytest.fixture(scope="module")
def sandbox_stack(tmp_path_factory: pytest.TempPathFactory, admin_key: str) -> Iterator[Stack]:
    """Broker + every service but the dashboard, with the Spotify sandbox (consent approved at
    once, its catalog the sample CSV's), against the machine's PostgreSQL."""
    name, url = new_pg_database("emergify_e2e")
    workdir = tmp_path_factory.mktemp("sandbox-stack")
    env = stack_env(url, admin_key)
    callback = f"{env['EMERGIFY_GATEWAY_URL']}/api/v1/spotify/callback"
    env.update(
        {
            "EMERGIFY_SPOTIFY_SANDBOX": "true",
            "EMERGIFY_SPOTIFY_SANDBOX_AUTO_APPROVE": "true",
            "EMERGIFY_SPOTIFY_REDIRECT_URI": callback,
            "EMERGIFY_SPOTIFY_SANDBOX_REDIRECT_URIS": json.dumps([callback]),
            "EMERGIFY_SPOTIFY_SANDBOX_CATALOG_CSV": str(SAMPLE_CSV),
            "EMERGIFY_SESSION_SECRET": secrets.token_urlsafe(32),
            "EMERGIFY_TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        }
    )
    services = tuple(s for s in services_for(spotify_sandbox=True) if s.name != "dashboard")
    log: list[str] = []
    s = Stack(env=env, workdir=workdir, services=services, sink=log.append)
    try:
        s.start()
        yield s
    finally:
        s.stop()
        drop_pg_database(name)
        out = Path("test-artifacts")
        out.mkdir(exist_ok=True)
        (out / "sandbox-stack.log").write_text("\n".join(log))


@pytest.fixture(scope="module")
def api(stack: Stack, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url("api-gateway"), headers={"X-API-Key": admin_key}, timeout=120
    ) as client:
        yield client
