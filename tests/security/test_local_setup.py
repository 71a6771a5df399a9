"""What `make up` sets up on one machine: a private .env with every secret, and the real
Spotify app as the default once one is configured."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from emergify_cli.envfile import GENERATED, PLACEHOLDER, ensure_env_file
from emergify_cli.main import spotify_mode
from emergify_spotify.config import Settings as SpotifySettings

REPO = Path(__file__).resolve().parents[2]


def _values(env: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in env.read_text().splitlines() if "=" in line)
    return {k: v for k, v in pairs if not k.startswith("#")}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / ".env.example").write_text((REPO / ".env.example").read_text())
    return tmp_path


def test_env_is_created_private_from_its_first_byte(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tightening the mode after writing would leave a window: with chmod doing nothing, the
    # file must still be 0600, i.e. created so.
    monkeypatch.setattr(Path, "chmod", lambda self, mode: None)
    previous = os.umask(0o022)
    try:
        env, created = ensure_env_file(root)
    finally:
        os.umask(previous)
    assert created
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    values = _values(env)
    secrets = [values[name] for name in GENERATED]
    assert len(set(secrets)) == len(secrets)  # each generated on its own
    assert all(len(value) >= 32 and value != PLACEHOLDER for value in secrets)
    assert set(GENERATED) >= {
        "EMERGIFY_ADMIN_API_KEY",
        "EMERGIFY_DASHBOARD_API_KEY",
        "EMERGIFY_INTERNAL_TOKEN",
        "EMERGIFY_SESSION_SECRET",
        "EMERGIFY_TOKEN_ENCRYPTION_KEY",
    }


def test_an_older_env_gains_the_secrets_it_lacks_and_keeps_its_own(root: Path) -> None:
    env = root / ".env"
    env.write_text(
        "EMERGIFY_ADMIN_API_KEY=kept-admin-key-0123456789abcdef\nEMERGIFY_LOG_LEVEL=DEBUG\n"
    )
    env.chmod(0o600)
    _, created = ensure_env_file(root)
    assert not created
    values = _values(env)
    assert values["EMERGIFY_ADMIN_API_KEY"] == "kept-admin-key-0123456789abcdef"
    assert values["EMERGIFY_LOG_LEVEL"] == "DEBUG"
    assert len(values["EMERGIFY_INTERNAL_TOKEN"]) >= 32
    assert len(values["EMERGIFY_DASHBOARD_API_KEY"]) >= 32
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert not list(root.glob(".env.tmp"))


@pytest.fixture
def clean_spotify_env(monkeypatch: pytest.MonkeyPatch, root: Path) -> Path:
    for name in ("CLIENT_ID", "CLIENT_SECRET", "SANDBOX"):
        monkeypatch.delenv(f"EMERGIFY_SPOTIFY_{name}", raising=False)
    monkeypatch.chdir(root)
    return root


def test_a_configured_spotify_app_is_the_default_over_the_sandbox(clean_spotify_env: Path) -> None:
    # A new user's path: `make up` makes .env from the example, the user adds their app.
    env, _ = ensure_env_file(clean_spotify_env)
    assert spotify_mode() == (True, "offline demo (sandbox)")
    with env.open("a") as f:
        f.write("EMERGIFY_SPOTIFY_CLIENT_ID=my-real-client-id\n")
        f.write("EMERGIFY_SPOTIFY_CLIENT_SECRET=my-real-client-secret\n")
    settings = SpotifySettings()
    assert settings.spotify_sandbox is False
    assert settings.spotify_client_id == "my-real-client-id"
    assert settings.spotify_accounts_url == "https://accounts.spotify.com"
    sandbox, line = spotify_mode()
    assert sandbox is False
    assert line == "real Spotify (https://accounts.spotify.com), client id my-real-client-id"


def test_the_sandbox_can_still_be_forced_and_says_it_overrides_the_app(
    clean_spotify_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMERGIFY_SPOTIFY_CLIENT_ID", "my-real-client-id")
    monkeypatch.setenv("EMERGIFY_SPOTIFY_CLIENT_SECRET", "my-real-client-secret")
    monkeypatch.setenv("EMERGIFY_SPOTIFY_SANDBOX", "true")
    sandbox, line = spotify_mode()
    assert sandbox is True
    assert "EMERGIFY_SPOTIFY_SANDBOX=true overrides your EMERGIFY_SPOTIFY_CLIENT_ID" in line
    monkeypatch.setenv("EMERGIFY_SPOTIFY_SANDBOX", "false")
    monkeypatch.delenv("EMERGIFY_SPOTIFY_CLIENT_ID")
    sandbox, line = spotify_mode()
    assert sandbox is False and line.startswith("not configured")
