"""The local ``.env``: created from ``.env.example`` on first run with fresh secrets."""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable
from pathlib import Path

PLACEHOLDER = "generated-on-first-run"


def _fernet_key() -> str:
    # Fernet's key format (32 random bytes, url-safe base64), without importing cryptography.
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


#: Every secret `emergify up` generates: the admin key, the dashboard's own read-only key, the
#: session-cookie signing secret, the key that encrypts Spotify tokens at rest and the
#: credential the services behind the gateway require.
GENERATED: dict[str, Callable[[], str]] = {
    "EMERGIFY_ADMIN_API_KEY": lambda: secrets.token_urlsafe(32),
    "EMERGIFY_DASHBOARD_API_KEY": lambda: secrets.token_urlsafe(32),
    "EMERGIFY_SESSION_SECRET": lambda: secrets.token_urlsafe(32),
    "EMERGIFY_TOKEN_ENCRYPTION_KEY": _fernet_key,
    "EMERGIFY_INTERNAL_TOKEN": lambda: secrets.token_urlsafe(32),
}


def ensure_env_file(root: Path) -> tuple[Path, bool]:
    """Create ``root/.env`` from ``.env.example`` if missing; return (path, created).

    Each generated secret's placeholder is replaced by a fresh random value (appended when the
    example lacks it), so no two installs share a secret and none is ever committed. An
    existing ``.env`` keeps its values and gains the secrets it lacks (from an older version).
    """
    env = root / ".env"
    if env.exists():
        text = env.read_text(encoding="utf-8")
        for name, generate in GENERATED.items():
            if not any(
                line.startswith(f"{name}=")
                and line.split("=", 1)[1].strip() not in ("", PLACEHOLDER)
                for line in text.splitlines()
            ):
                set_value(env, name, generate())
        return env, False
    example = root / ".env.example"
    text = example.read_text(encoding="utf-8") if example.exists() else ""
    for name, generate in GENERATED.items():
        if f"{name}={PLACEHOLDER}" in text:
            text = text.replace(f"{name}={PLACEHOLDER}", f"{name}={generate()}")
        else:
            text += f"\n{name}={generate()}\n"
    write_private(env, text)
    return env, True


def write_private(path: Path, text: str) -> None:
    """Create ``path`` readable by its owner only, from the first byte: the file is opened
    with mode 0600 (never written world-readable and tightened afterwards); refuses to
    overwrite an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    # The umask can only remove bits; make the mode exact whatever it was.
    path.chmod(0o600)


def set_value(path: Path, name: str, value: str) -> None:
    """Set ``name=value`` in the env file at ``path`` (replacing a placeholder or an existing
    line, appending otherwise), keeping its 0600 mode."""
    lines = path.read_text(encoding="utf-8").splitlines()
    kept = [line for line in lines if not line.startswith(f"{name}=")]
    text = "\n".join([*kept, f"{name}={value}"]) + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    write_private(tmp, text)
    tmp.replace(path)
