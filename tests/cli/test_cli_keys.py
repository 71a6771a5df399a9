"""``emergify keys`` on the gateway's key file, checked through the running gateway: the keys
it prints work with their scopes, rotation and revocation take effect without a restart."""

from __future__ import annotations

import httpx
from cli_stack import CliStack
from typer.testing import CliRunner

from emergify_cli.main import app

SEED = "70kFiCsoYnJxMgIZ82WQmj"


def _keys(run: CliRunner, stack: CliStack, *args: str) -> tuple[int, str]:
    result = run.invoke(app, ["keys", *args, "--file", str(stack.keys_file)])
    return result.exit_code, result.output


def _recommend(stack: CliStack, key: str) -> int:
    return httpx.post(
        f"{stack.gateway_url}/api/v1/recommendations",
        json={"seeds": [SEED], "limit": 3},
        headers={"X-API-Key": key},
    ).status_code


def _upload(stack: CliStack, key: str) -> int:
    return httpx.post(
        f"{stack.gateway_url}/api/v1/songs", json=[], headers={"X-API-Key": key}
    ).status_code


def test_a_created_key_works_with_its_scope_only(stack: CliStack, run: CliRunner) -> None:
    code, output = _keys(run, stack, "create", "--name", "reader", "--scope", "recs:read")
    assert code == 0, output
    key = output.strip().splitlines()[-1]  # printed alone on the last line
    assert _recommend(stack, key) == 200
    assert _upload(stack, key) == 403

    code, listing = _keys(run, stack, "list")
    assert code == 0 and "reader" in listing and "recs:read" in listing
    assert key not in listing  # stored hashed, never shown again


def test_rotate_then_revoke_take_effect_at_the_next_request(
    stack: CliStack, run: CliRunner
) -> None:
    code, output = _keys(run, stack, "create", "--name", "rotating", "--scope", "recs:read")
    old = output.strip().splitlines()[-1]
    key_id = output.split("created key ")[1].split()[0]
    assert _recommend(stack, old) == 200

    code, output = _keys(run, stack, "rotate", key_id)
    assert code == 0, output
    new = output.strip().splitlines()[-2]  # the key, then "the old key ... no longer works"
    assert f"the old key {key_id} no longer works" in output
    assert _recommend(stack, old) == 401
    assert _recommend(stack, new) == 200

    new_id = output.split("rotated: new key ")[1].split()[0]
    code, output = _keys(run, stack, "revoke", new_id)
    assert code == 0 and f"revoked key {new_id}" in output
    assert _recommend(stack, new) == 401


def test_an_unknown_scope_or_key_id_is_refused(stack: CliStack, run: CliRunner) -> None:
    code, output = _keys(run, stack, "create", "--name", "x", "--scope", "everything")
    assert code == 2 and "'everything' is not a scope" in output
    code, output = _keys(run, stack, "revoke", "no-such-id")
    assert code == 1
