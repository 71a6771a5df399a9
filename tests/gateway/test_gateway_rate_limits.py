"""Rate limits that fit their callers: per key for key holders, per client address for the
rest, X-Forwarded-For believed only from trusted proxies, and a limit of each key's own.

Served by uvicorn as ``python -m emergify_gateway`` serves it, so the client address is the
one a real deployment sees.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from emergify_cli.main import app as cli
from emergify_gateway.keystore import KeyFile
from emergify_gateway.rate_limit import parse_rate
from emergify_gateway.routes import Access

ADMIN_KEY = "test-admin-key-0123456789abcdef"  # the admin key of tests/gateway/conftest.py


def test_forwarded_for_from_an_untrusted_client_is_ignored(
    served_gateway: Callable[..., str],
) -> None:
    base = served_gateway(rate_limit_per_minute=1, rate_limit_burst=2)
    answers = [
        httpx.get(f"{base}/api/v1/model", headers={"X-Forwarded-For": f"10.0.0.{n}"}).status_code
        for n in range(4)
    ]
    # Every request comes from 127.0.0.1, whatever it claims: the third is over the limit.
    assert answers == [401, 401, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    served_gateway: Callable[..., str],
) -> None:
    base = served_gateway(
        rate_limit_per_minute=1, rate_limit_burst=2, trusted_proxies=["127.0.0.0/8"]
    )

    def get(forwarded: str) -> int:
        headers = {"X-Forwarded-For": forwarded}
        return httpx.get(f"{base}/api/v1/model", headers=headers).status_code

    assert [get("10.0.0.1") for _ in range(3)] == [401, 401, 429]
    assert get("10.0.0.2") == 401  # another client behind the proxy has its own bucket
    # A client cannot prepend an address of its choice: the proxy appends the real one.
    assert get("10.0.0.99, 10.0.0.1") == 429


def test_two_hundred_recommendations_with_the_admin_key_are_not_throttled(
    served_gateway: Callable[..., str],
) -> None:
    base = served_gateway()  # default limits
    with httpx.Client(base_url=base, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as client:
        answers = [
            client.post("/api/v1/recommendations", json={"seeds": ["a"]}).status_code
            for _ in range(200)
        ]
    assert answers.count(429) == 0 and set(answers) == {200}


def test_a_key_is_limited_per_key_not_per_address(
    served_gateway: Callable[..., str], tmp_path: Path
) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    a = {"X-API-Key": keys.create("a", {Access.READ}).key}
    b = {"X-API-Key": keys.create("b", {Access.READ}).key}
    base = served_gateway(
        api_keys_file=tmp_path / "keys.json", rate_limit_per_minute=1, rate_limit_burst=2
    )
    with httpx.Client(base_url=base, timeout=10) as client:
        assert [client.get("/api/v1/model", headers=a).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]
        # Same address, another key: its own bucket, untouched by key a.
        assert client.get("/api/v1/model", headers=b).status_code == 200
        # And the address itself was never charged for the key holders' requests.
        assert client.get("/api/v1/model").status_code == 401


def test_each_key_carries_its_own_rate(served_gateway: Callable[..., str], tmp_path: Path) -> None:
    key_file = tmp_path / "keys.json"
    result = CliRunner().invoke(
        cli,
        ["keys", "create", "--name", "batch", "--scope", "recs:read", "--rate", "6000/min",
         "--file", str(key_file)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    fast = {"X-API-Key": result.output.strip().splitlines()[-1]}
    base = served_gateway(api_keys_file=key_file, rate_limit_per_minute=1, rate_limit_burst=2)
    with httpx.Client(base_url=base, timeout=10) as client:
        assert {client.get("/api/v1/model", headers=fast).status_code for _ in range(60)} == {200}
        # The admin keys API sets a rate too, and lists it.
        created = client.post(
            "/api/v1/admin/keys",
            headers={"X-API-Key": ADMIN_KEY},
            json={"name": "slow", "scopes": ["recs:read"], "rate": "2/min"},
        )
        assert created.status_code == 201, created.text
        assert created.json()["rate_per_minute"] == 2
        slow = {"X-API-Key": created.json()["key"]}
        answers = [client.get("/api/v1/model", headers=slow).status_code for _ in range(4)]
        assert answers[-1] == 429
        listed = client.get("/api/v1/admin/keys", headers={"X-API-Key": ADMIN_KEY}).json()
        assert {k["name"]: k["rate_per_minute"] for k in listed["items"]} == {
            "batch": 6000,
            "slow": 2,
        }


def test_rates_are_read_in_words() -> None:
    assert parse_rate("6000/min") == 6000
    assert parse_rate("10/s") == 600
    assert parse_rate("120/h") == 2
    assert parse_rate("unlimited") == 0
    for bad in ("fast", "10/day", "-1/min", "1/60s"):
        with pytest.raises(ValueError, match="rate"):
            parse_rate(bad)
