"""The index on disk: a cold start reads the last built index back instead of rebuilding it.

A full build costs ~20-30 s of per-song Python work per million songs (text keys, hashes,
credit keys; bench/README.md), so a restart at 10M songs would take minutes. After a full
build (and again whenever the catalog has grown by a quarter since) the catalog writes its
:class:`SongIndex` here; at start it reads it back when it is still valid for the served
model, then catches up with the feature table exactly as its fallback poll does (songs
written after the snapshot's watermark, the artist profiles changed since). Anything else
(no file, another model version or similarity setting, a file from another format, a damaged
file) means a full build, as before.

The file: one header line (JSON: format, model version, watermark, songs, similarity), the
index pickled (protocol 5) without its model (read from the model registry at load), and a
trailer line with the payload's length and SHA-256 (streamed both ways: the payload is never
held twice in memory). It is read back by an unpickler that builds only the
index's own classes, NumPy arrays and datetimes (:data:`_ALLOWED`), so a file that is not
ours cannot run code; it is written to a temporary name with mode 0600 and renamed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from emergify_recommender.artist_vectors import Similarity
from emergify_recommender.index import SongIndex
from emergify_recommender.model import LoadedModel
from emergify_recommender.records import as_utc

log = structlog.get_logger()

#: Bumped whenever a class the snapshot holds changes shape: an older file is then ignored.
FORMAT = 3  # 2: the index's id_order is intp; 3: cells keep their boxes cell-major only
_MAGIC = b"EMERGIFY-INDEX-SNAPSHOT"

#: The globals a snapshot may name: the index's own classes, NumPy's array reconstruction
#: and datetimes. Anything else in a file makes it invalid (nothing is imported or called).
_ALLOWED: frozenset[tuple[str, str]] = frozenset(
    {
        ("emergify_recommender.index", "SongIndex"),
        ("emergify_recommender.cells", "Cells"),
        ("emergify_recommender.columns", "TextColumn"),
        ("emergify_recommender.columns", "CodedTextColumn"),
        ("emergify_recommender.columns", "HashListColumn"),
        ("emergify_recommender.columns", "FeatureMatrix"),
        ("emergify_recommender.artist_vectors", "ArtistVectors"),
        ("emergify_recommender.artist_vectors", "Similarity"),
        ("emergify_contracts.artist_profiles", "ArtistProfiles"),
        ("emergify_contracts.artist_profiles", "MultiArtistRule"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("datetime", "datetime"),
        ("datetime", "timezone"),
        ("datetime", "timedelta"),
    }
)


class SnapshotInvalid(Exception):
    """The file is not a snapshot this code can use (the reason is the message)."""


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise SnapshotInvalid(f"the file names {module}.{name}, which a snapshot never holds")
        return super().find_class(module, name)


@dataclass(frozen=True)
class Header:
    """What a snapshot is valid for."""

    format: int
    database: str  # the feature table's database, without its password
    model_version: int
    model_trained_at: str
    similarity: dict[str, Any]
    watermark: int | None
    songs: int
    written_at: str


class _Hashing:
    """A binary file that hashes and counts what passes through it (the payload is
    streamed: never held twice in memory)."""

    def __init__(self, f: Any) -> None:
        self._f = f
        self.sha = hashlib.sha256()
        self.size = 0

    def _seen(self, data: bytes | memoryview) -> None:
        self.sha.update(data)
        self.size += len(data)

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._seen(view)
        return self._f.write(view)

    def read(self, n: int = -1) -> bytes:
        data = self._f.read(n)
        self._seen(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._f.readinto(buffer)
        self._seen(memoryview(buffer).cast("B")[:n])
        return n

    def readline(self) -> bytes:
        data = self._f.readline()
        self._seen(data)
        return data


def _similarity(value: Similarity | None) -> dict[str, Any]:
    return {} if value is None else dataclasses.asdict(value)


def _utc(value: datetime | None) -> datetime | None:
    value = as_utc(value)  # naive ones are UTC already
    return None if value is None else value.astimezone(UTC)


def _trained_at(model: LoadedModel) -> str:
    return model.portable.trained_at.isoformat()


def write(path: Path, index: SongIndex, database: str) -> tuple[Header, int]:
    """Write ``index`` (which must have a model) to ``path``: a temporary file in the same
    directory, fsynced, renamed over the old snapshot. Returns the header and the payload's
    size in bytes."""
    if index.model is None:
        raise ValueError("only an index with a model is worth a snapshot")
    header = Header(
        format=FORMAT,
        database=database,
        model_version=index.model.version,
        model_trained_at=_trained_at(index.model),
        similarity=_similarity(index.similarity),
        watermark=index.watermark,
        songs=len(index),
        written_at=datetime.now(UTC).isoformat(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + b" " + json.dumps(dataclasses.asdict(header)).encode() + b"\n")
            payload = _Hashing(f)
            # Without the model (the registry has it) and without cached properties; times
            # in plain UTC (a database driver's own time zone class is not allowed back in).
            saved = dataclasses.replace(
                index,
                model=None,
                last_batch_at=_utc(index.last_batch_at),
                last_update=_utc(index.last_update),
                loaded_at=_utc(index.loaded_at),
            )
            pickle.dump(saved, payload, protocol=5)
            f.write(f"\n{payload.size} {payload.sha.hexdigest()}\n".encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return header, payload.size


def read_header(path: Path) -> Header:
    """The header of the snapshot at ``path`` (raises :class:`SnapshotInvalid`)."""
    with path.open("rb") as f:
        return _header(f.readline())


def _header(line: bytes) -> Header:
    magic, _, rest = line.partition(b" ")
    if magic != _MAGIC:
        raise SnapshotInvalid("not an index snapshot")
    try:
        header = Header(**json.loads(rest))
    except (ValueError, TypeError) as exc:
        raise SnapshotInvalid(f"unreadable header: {exc}") from exc
    if header.format != FORMAT:
        raise SnapshotInvalid(f"format {header.format}, this code reads {FORMAT}")
    return header


def read(
    path: Path, model: LoadedModel, similarity: Similarity, database: str
) -> tuple[SongIndex, Header]:
    """The index saved at ``path``, with ``model``, when the snapshot was written from
    ``database`` for that model (version and training time) and ``similarity`` (what the
    catalog would build now); else raises :class:`SnapshotInvalid` saying why. A missing
    file raises ``FileNotFoundError``."""
    with path.open("rb") as f:
        header = _header(f.readline())
        if header.database != database:
            raise SnapshotInvalid("written from another database")
        if (header.model_version, header.model_trained_at) != (model.version, _trained_at(model)):
            raise SnapshotInvalid(
                f"written for model version {header.model_version} trained at "
                f"{header.model_trained_at}, serving {model.version}"
            )
        if header.similarity != _similarity(similarity):
            raise SnapshotInvalid("written for another similarity setting")
        payload = _Hashing(f)
        try:
            index = _Unpickler(payload).load()
        except SnapshotInvalid:
            raise
        except Exception as exc:  # cut short, or a class that changed shape
            raise SnapshotInvalid(f"unreadable: {type(exc).__name__}: {exc}") from exc
        trailer = f.read().split()
    if trailer != [str(payload.size).encode(), payload.sha.hexdigest().encode()]:
        raise SnapshotInvalid("its checksum does not match (damaged or cut short)")
    if not isinstance(index, SongIndex) or len(index) != header.songs:
        raise SnapshotInvalid("it does not hold the index its header describes")
    index = dataclasses.replace(index, model=model, loaded_at=datetime.now(UTC))
    return index, header


class Snapshots:
    """When to write a snapshot, one at a time, off the request path."""

    #: Write again once the catalog has grown by this fraction since the last snapshot.
    GROWTH = 0.25

    def __init__(self, path: Path | None, database: str) -> None:
        self.path = path
        self.database = database
        self._writing = threading.Lock()
        self._written_songs: int | None = None
        self._written_model: int | None = None
        self.last_error: str | None = None

    def due(self, index: SongIndex) -> bool:
        """Whether ``index`` should be written: a new model since the last snapshot, or a
        quarter more songs."""
        if self.path is None or index.model_version is None:
            return False
        if self._written_model != index.model_version or self._written_songs is None:
            return True
        return len(index) >= self._written_songs * (1 + self.GROWTH)

    def loaded(self, header: Header) -> None:
        """The catalog started from this snapshot: it counts as written."""
        self._written_model, self._written_songs = header.model_version, header.songs

    def write_if_due(self, index: SongIndex) -> bool:
        """Write ``index`` when :meth:`due` and no write is under way (blocking; call it
        from a worker thread). Never raises: a failed write is logged."""
        if self.path is None or not self.due(index) or not self._writing.acquire(blocking=False):
            return False
        started = time.perf_counter()
        # Tried for this model and size, even if it fails (a read-only directory would
        # otherwise make every catalog change try again).
        self._written_model, self._written_songs = index.model_version, len(index)
        try:
            header, size = write(self.path, index, self.database)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("index snapshot not written", path=str(self.path), error=self.last_error)
            return False
        finally:
            self._writing.release()
        self.last_error = None
        log.info(
            "index snapshot written",
            songs=header.songs,
            model_version=header.model_version,
            watermark=header.watermark,
            mib=round(size / 2**20, 1),
            seconds=round(time.perf_counter() - started, 2),
        )
        return True
