"""The local ``.env``: created from ``.env.example`` on first run with a fresh admin key."""

from __future__ import annotations

import secrets
from pathlib import Path

PLACEHOLDER = "generated-on-first-run"


def ensure_env_file(root: Path) -> tuple[Path, bool]:
    """Create ``root/.env`` from ``.env.example`` if missing; return (path, created).

    The admin key placeholder is replaced by a random 256-bit key, so no two installs
    share a key and none is ever committed.
    """
    env = root / ".env"
    if env.exists():
        return env, False
    example = root / ".env.example"
    text = example.read_text(encoding="utf-8") if example.exists() else ""
    key = secrets.token_urlsafe(32)
    if f"EMERGIFY_ADMIN_API_KEY={PLACEHOLDER}" in text:
        text = text.replace(
            f"EMERGIFY_ADMIN_API_KEY={PLACEHOLDER}", f"EMERGIFY_ADMIN_API_KEY={key}"
        )
    else:
        text += f"\nEMERGIFY_ADMIN_API_KEY={key}\n"
    env.write_text(text, encoding="utf-8")
    env.chmod(0o600)
    return env, True
