"""Scoped API keys kept in a file, stored only as hashes, changed without a restart.

A key reads ``emk_<id>_<secret>``: ``id`` (12 hex digits) names the key in listings, logs and
the ``X-Emergify-Principal`` header and finds its record without scanning; ``secret`` is 32
random bytes, URL-safe base64. The file keeps the sha256 of the whole key, never the key.

The file is replaced atomically (write to a temporary file, ``fsync``, rename) with mode 0600,
under an exclusive lock so the ``emergify keys`` command and the gateway's admin endpoints may
both change it. :class:`KeyStore` re-reads it when it changes, so a created, rotated or revoked
key takes effect at the next request.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from emergify_gateway.routes import SCOPES, Access, parse_scope

KEY_PREFIX = "emk_"
FILE_VERSION = 1

log = structlog.get_logger()


class KeyNotFoundError(KeyError):
    """No key with that id is in the key file."""

    def __init__(self, key_id: str) -> None:
        super().__init__(key_id)
        self.key_id = key_id

    def __str__(self) -> str:
        return f"no API key with id {self.key_id!r}; `emergify keys list` shows them"


class KeyFileError(RuntimeError):
    """The key file exists but cannot be understood."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class KeyRecord:
    """One issued key as the file keeps it: everything but the key itself."""

    id: str
    name: str
    scopes: frozenset[Access]
    sha256: str
    created_at: datetime
    revoked_at: datetime | None = None
    # Set on the old key by a rotation: it keeps working until then.
    expires_at: datetime | None = None
    rotated_from: str | None = None
    # Requests per minute; None: the gateway's default rate, 0: not limited.
    rate_per_minute: int | None = None

    def active(self, now: datetime) -> bool:
        """Whether the key may be used at ``now`` (not revoked, not past its grace period)."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at

    def public(self) -> dict[str, Any]:
        """What listings show: never the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted_scopes(self.scopes),
            "created_at": self.created_at.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "rotated_from": self.rotated_from,
            "rate_per_minute": self.rate_per_minute,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.public(), "sha256": self.sha256}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyRecord:
        def when(value: str | None) -> datetime | None:
            return datetime.fromisoformat(value) if value else None

        created = when(data["created_at"])
        assert created is not None
        return cls(
            id=str(data["id"]),
            name=str(data.get("name", "")),
            scopes=frozenset(parse_scope(s) for s in data["scopes"]),
            sha256=str(data["sha256"]),
            created_at=created,
            revoked_at=when(data.get("revoked_at")),
            expires_at=when(data.get("expires_at")),
            rotated_from=data.get("rotated_from"),
            rate_per_minute=data.get("rate_per_minute"),
        )


@dataclass(frozen=True)
class IssuedKey:
    """A newly created key: the record, and the key itself (shown once, never stored)."""

    record: KeyRecord
    key: str = field(repr=False)


def sorted_scopes(scopes: frozenset[Access]) -> list[str]:
    """Scope names in their canonical order."""
    return [scope.value for scope in SCOPES if scope in scopes]


def hash_key(key: str) -> str:
    """The sha256 the key file keeps for ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id inside an ``emk_<id>_<secret>`` key, or None if ``key`` does not look like one."""
    if not key.startswith(KEY_PREFIX):
        return None
    key_id, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or not key_id.isalnum():
        return None
    return key_id


def new_key() -> tuple[str, str]:
    """A fresh ``(id, key)``."""
    key_id = secrets.token_hex(6)
    return key_id, f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"


class KeyFile:
    """Reads and changes the key file; every change is locked, atomic and 0600."""

    def __init__(self, path: Path | str, clock: Callable[[], datetime] = _now) -> None:
        self.path = Path(path)
        self._clock = clock

    def read(self) -> dict[str, KeyRecord]:
        """Every record by id; an absent file holds no keys."""
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(raw)
            records = [KeyRecord.from_json(item) for item in data["keys"]]
        except (ValueError, KeyError, TypeError, AssertionError) as exc:
            raise KeyFileError(f"{self.path} is not a valid API key file: {exc!r}") from exc
        return {record.id: record for record in records}

    def create(
        self,
        name: str,
        scopes: frozenset[Access] | set[Access],
        rate_per_minute: int | None = None,
    ) -> IssuedKey:
        """Issue a key with ``scopes`` (and its own rate, if given); the returned key is the
        only copy there will be."""
        scopes = frozenset(scopes)
        if not scopes or Access.PUBLIC in scopes:
            names = ", ".join(scope.value for scope in SCOPES)
            raise ValueError(f"a key needs at least one scope of {names}")
        with self._changing() as records:
            issued = self._issue(records, name, scopes, None, rate_per_minute)
        log.info("api key created", key_id=issued.record.id, scopes=sorted_scopes(scopes))
        return issued

    def revoke(self, key_id: str) -> KeyRecord:
        """Stop ``key_id`` working now (a revoked key stays listed)."""
        with self._changing() as records:
            record = self._get(records, key_id)
            if record.revoked_at is None:
                record = records[key_id] = replace(record, revoked_at=self._clock())
        log.info("api key revoked", key_id=key_id)
        return record

    def rotate(self, key_id: str, grace_seconds: float = 0) -> IssuedKey:
        """A new key with ``key_id``'s name and scopes; the old one works ``grace_seconds`` more."""
        if grace_seconds < 0:
            raise ValueError("grace_seconds must be 0 or more")
        with self._changing() as records:
            old = self._get(records, key_id)
            now = self._clock()
            if not old.active(now):
                raise ValueError(f"key {key_id} is revoked or expired; create a new one instead")
            issued = self._issue(records, old.name, old.scopes, old.id, old.rate_per_minute)
            if grace_seconds == 0:
                records[key_id] = replace(old, revoked_at=now)
            else:
                expires = now + timedelta(seconds=grace_seconds)
                records[key_id] = replace(old, expires_at=min(expires, old.expires_at or expires))
        log.info(
            "api key rotated",
            key_id=key_id,
            new_key_id=issued.record.id,
            grace_seconds=grace_seconds,
        )
        return issued

    def _issue(
        self,
        records: dict[str, KeyRecord],
        name: str,
        scopes: frozenset[Access],
        rotated_from: str | None,
        rate_per_minute: int | None = None,
    ) -> IssuedKey:
        key_id, key = new_key()
        while key_id in records:  # 48 random bits: practically never
            key_id, key = new_key()
        record = KeyRecord(
            id=key_id,
            name=name,
            scopes=scopes,
            sha256=hash_key(key),
            created_at=self._clock(),
            rotated_from=rotated_from,
            rate_per_minute=rate_per_minute,
        )
        records[key_id] = record
        return IssuedKey(record, key)

    @staticmethod
    def _get(records: dict[str, KeyRecord], key_id: str) -> KeyRecord:
        try:
            return records[key_id]
        except KeyError:
            raise KeyNotFoundError(key_id) from None

    @contextmanager
    def _changing(self) -> Iterator[dict[str, KeyRecord]]:
        """Lock the file, yield its records to change, and write them back atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            records = self.read()
            yield records
            self._write(records)
        finally:
            os.close(fd)  # also releases the lock

    def _write(self, records: dict[str, KeyRecord]) -> None:
        payload = {
            "version": FILE_VERSION,
            "keys": [r.to_json() for r in sorted(records.values(), key=lambda r: r.created_at)],
        }
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            os.fchmod(fd, 0o600)  # mkstemp already uses 0600; said here so it stays so
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(payload, f, indent=2)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class KeyStore:
    """The gateway's view of the key file, re-read whenever the file changes.

    Each lookup costs one ``stat``: the file is re-read only when its inode, size or
    modification time differ from the last read, so a key created, rotated or revoked by the
    CLI works (or stops working) at the next request.
    """

    def __init__(self, path: Path | str, clock: Callable[[], datetime] = _now) -> None:
        self.file = KeyFile(path, clock)
        self._clock = clock
        self._records: dict[str, KeyRecord] = {}
        self._signature: tuple[int, int, int] | None = None
        self._lock = threading.Lock()

    def lookup(self, key: str) -> KeyRecord | None:
        """The active record ``key`` belongs to, or None (unknown, wrong, revoked, expired)."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        record = self._current().get(key_id)
        if record is None or not hmac.compare_digest(record.sha256, hash_key(key)):
            return None
        return record if record.active(self._clock()) else None

    def records(self) -> dict[str, KeyRecord]:
        """Every record (revoked and expired ones too), as the file holds them now."""
        return dict(self._current())

    def _current(self) -> dict[str, KeyRecord]:
        try:
            st = os.stat(self.file.path)
            signature: tuple[int, int, int] | None = (st.st_ino, st.st_size, st.st_mtime_ns)
        except FileNotFoundError:
            signature = None
        with self._lock:
            if signature != self._signature:
                try:
                    self._records = self.file.read()
                except KeyFileError as exc:
                    # Keep the last good keys rather than locking everyone out (or in).
                    log.error(
                        "api key file unreadable; keeping the keys read before", error=str(exc)
                    )
                else:
                    log.info(
                        "api key file loaded", path=str(self.file.path), keys=len(self._records)
                    )
                self._signature = signature
            return self._records
