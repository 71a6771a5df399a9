"""The OAuth callback's ``code`` and ``state`` never reach a log line of a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from emergify_cli.broker import free_port

CODE = "oauthcode0a1b2c3d4e5f6a7b8c9d"
STATE = "oauthstate0f5e4d3c2b1a0b9c8d7e"


def _served(args: list[str], env: dict[str, str], url: str, cwd: Path) -> str:
    """Run ``args`` until it answers ``url/health``, call the callback, stop it; its output."""
    proc = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        for _ in range(600):
            try:
                httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert proc.poll() is None, "the service exited before answering"
                time.sleep(0.1)
        callback = httpx.get(
            f"{url}/api/v1/spotify/callback", params={"code": CODE, "state": STATE}, timeout=30
        )
        assert callback.status_code < 500 or callback.status_code == 503, callback.text
    finally:
        proc.terminate()
        output, _ = proc.communicate(timeout=30)
    return output


def test_spotify_gateway_access_log_has_no_oauth_code_or_state(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMERGIFY_")}
    env.update(
        EMERGIFY_SPOTIFY_GATEWAY_URL=f"http://127.0.0.1:{port}",
        EMERGIFY_DATABASE_URL=f"sqlite:///{tmp_path / 'spotify.db'}",
        EMERGIFY_LOG_FORMAT="json",
        EMERGIFY_INTERNAL_TOKEN=os.environ["EMERGIFY_INTERNAL_TOKEN"],  # else it refuses to start
    )
    output = _served(
        [sys.executable, "-m", "emergify_spotify"], env, f"http://127.0.0.1:{port}", tmp_path
    )
    assert "/api/v1/spotify/callback" in output  # the access line is there ...
    assert CODE not in output and STATE not in output  # ... without the code or the state
