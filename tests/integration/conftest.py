"""The whole stack, as `make up` starts it, on free ports in a temporary folder."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from testkit import drop_pg_database, new_pg_database

from emergify_cli.stack import Stack, free_port_env

LOG_LINES: list[str] = []


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
def api(stack: Stack, admin_key: str) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=stack.url("api-gateway"), headers={"X-API-Key": admin_key}, timeout=120
    ) as client:
        yield client
