"""Signed-out sessions, refused by the gateway until the cookie would have expired anyway.

A session cookie is self-contained (signed, with an expiry), so signing out must be recorded
for a copied cookie to stop working. The gateway keeps the sha256 of each signed-out cookie
with its expiry in one JSON file (mode 0600, replaced atomically under a lock, like the key
file), re-read when it changes, so every gateway process sharing it refuses the cookie.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

log = structlog.get_logger()


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class RevokedSessions:
    """The revocation file: ``{sha256 of cookie: expiry (unix seconds)}``."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._revoked: dict[str, int] = {}
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def revoke(self, cookie: str, expires_at: int) -> None:
        """Refuse ``cookie`` from now until ``expires_at`` (after that it is refused anyway)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            now = self._clock()
            revoked = {d: e for d, e in self._read().items() if e > now}  # expired: forgotten
            revoked[_digest(cookie)] = expires_at
            self._write(revoked)
        finally:
            os.close(fd)
        log.info("session signed out", sessions_revoked=len(revoked))

    def is_revoked(self, cookie: str) -> bool:
        """Whether ``cookie`` was signed out."""
        return _digest(cookie) in self._current()

    def _current(self) -> dict[str, int]:
        try:
            st = os.stat(self.path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                self._revoked = self._read()
                self._signature = signature
            return self._revoked

    def _read(self) -> dict[str, int]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return {str(k): int(v) for k, v in data["revoked"].items()}
        except FileNotFoundError:
            return {}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # Keep the sessions revoked before rather than letting every one back in.
            log.error("revoked sessions file unreadable", path=str(self.path), error=repr(exc))
            return dict(self._revoked)

    def _write(self, revoked: dict[str, int]) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"revoked": revoked}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
