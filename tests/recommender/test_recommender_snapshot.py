"""The index snapshot: a restart reads the saved index back (blended, with artist profiles),
catches up with what the feature table gained since, and answers exactly as a full build
does; a snapshot of another model, database or similarity, or a damaged or foreign file,
is never used."""

from __future__ import annotations

import asyncio
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from emergify_contracts.artist_profiles import artist_profiles
from emergify_contracts.model import PortableModel
from emergify_contracts.song import Song
from emergify_recommender.artist_vectors import DEFAULT_SIMILARITY, Similarity
from emergify_recommender.catalog import Catalog
from emergify_recommender.index import SongIndex
from emergify_recommender.ranking import query_vector, rank
from emergify_recommender.snapshot import SnapshotInvalid, read, read_header

from .test_recommender_similarity_api import SIMILARITY, keys_of, standardized, write_profiles


def start(db: Any, path: Path, similarity: Similarity | None = None) -> Catalog:
    """A catalog started as the service starts it, its snapshot save (if any) finished."""
    catalog = Catalog(db.engine, similarity, snapshot_path=path)

    async def run() -> None:
        await catalog.reload("start")
        await catalog.snapshot_written()

    asyncio.run(run())
    return catalog


def answers(index: SongIndex, seeds: list[int]) -> list[list[tuple[str, float]]]:
    out = []
    for row in seeds:
        found = rank(index, query_vector(index, [row]), limit=30, exclude=[row], seeds=[row])
        out.append([(index.track_id(f.row), round(f.distance, 9)) for f in found])
    return out


@pytest.fixture
def blended_db(catalog_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel):
    """4,000 sample songs at table version 1, model v1 stored with a similarity setting and
    the artist profiles the batch layer writes."""
    songs = sample_songs[:4000]
    catalog_db.insert_songs([rec.song_row(s, 1) for s in songs])
    catalog_db.insert_model(sample_model, {"similarity": SIMILARITY})
    profiles = artist_profiles(standardized(sample_model, songs), keys_of(songs))
    write_profiles(catalog_db, sample_model.version, profiles, 1)
    return catalog_db


def test_a_restart_reads_the_snapshot_catches_up_and_answers_as_a_full_build(
    blended_db: Any, rec: Any, sample_songs: list[Song], tmp_path: Path
) -> None:
    path = tmp_path / "var" / "index.snapshot"
    first = start(blended_db, path)
    assert first.started_from == "full build" and path.is_file()
    assert os.stat(path).st_mode & 0o777 == 0o600
    header = read_header(path)
    assert (header.songs, header.model_version, header.watermark) == (4000, 1, 1)
    assert "password" not in header.database

    # Songs committed while the recommender was down: the restart must pick them up.
    later = sample_songs[4000:4200]
    blended_db.insert_songs([rec.song_row(s, 2) for s in later])
    again = start(blended_db, path)
    assert again.started_from == "snapshot"
    index = again.require()
    assert len(index) == 4200 and index.blended and index.model_version == 1
    assert index.watermark == 2
    assert all(index.position(s.track_id) is not None for s in later)

    # Exactly what a full build of the same table answers (the blended distance included).
    full = Catalog(blended_db.engine)
    built = asyncio.run(full.reload("test"))
    seeds = [index.position(s.track_id) for s in (sample_songs[3], later[7], later[150])]
    built_seeds = [built.position(index.track_id(r)) for r in seeds]
    assert index.artist_weight == built.artist_weight == SIMILARITY["artist_weight"]
    assert answers(index, seeds) == answers(built, built_seeds)
    assert np.array_equal(np.sort(index.ids), np.sort(built.ids))


def test_a_snapshot_is_not_used_for_another_model_database_or_similarity(
    blended_db: Any, sample_songs: list[Song], sample_model: PortableModel, tmp_path: Path
) -> None:
    path = tmp_path / "index.snapshot"
    start(blended_db, path)
    header = read_header(path)
    model = start(blended_db, tmp_path / "unused").require().model
    assert model is not None
    similarity = Similarity.of_model(model.metrics, DEFAULT_SIMILARITY)

    index, _ = read(path, model, similarity, header.database)
    assert len(index) == 4000  # the valid case reads
    with pytest.raises(SnapshotInvalid, match="another database"):
        read(path, model, similarity, "sqlite:///elsewhere.db")
    with pytest.raises(SnapshotInvalid, match="another similarity"):
        read(path, model, Similarity(0.5, "weighted"), header.database)

    # A newer model makes the restart build from scratch (every cluster changes) and save anew.
    v2 = sample_model.model_copy(update={"version": 2})
    blended_db.insert_model(v2, {"similarity": SIMILARITY})
    restarted = start(blended_db, path)
    assert restarted.started_from == "full build"
    assert restarted.require().model_version == 2 and read_header(path).model_version == 2


@pytest.mark.parametrize("damage", ["cut short", "a flipped byte", "not ours"])
def test_a_damaged_or_foreign_file_means_a_full_build(
    blended_db: Any, tmp_path: Path, damage: str
) -> None:
    path = tmp_path / "index.snapshot"
    start(blended_db, path)
    data = bytearray(path.read_bytes())
    marker = tmp_path / "ran"
    if damage == "cut short":
        data = data[: len(data) // 2]
    elif damage == "a flipped byte":
        data[len(data) // 2] ^= 0xFF
    else:  # a file that would run a command if it were unpickled as is
        header_line = bytes(data[: data.index(b"\n") + 1])
        evil = pickle.dumps(_RunsCommand(f"touch {marker}"), protocol=5)
        data = bytearray(header_line + evil + b"\n0 x\n")
    path.write_bytes(bytes(data))

    restarted = start(blended_db, path)
    assert restarted.started_from == "full build"
    assert len(restarted.require()) == 4000
    assert not marker.exists()
    assert read_header(path).songs == 4000  # the full build saved a good snapshot again


class _RunsCommand:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (self.command,))


def test_a_new_model_is_applied_to_the_loaded_songs_as_a_full_load_would(
    blended_db: Any, rec: Any, sample_songs: list[Song], sample_model: PortableModel, tmp_path
) -> None:
    """A published model reaches the loaded index without a full load (remodeled, then the
    songs committed since are caught up) and answers as a full load of the same table."""
    catalog = start(blended_db, tmp_path / "index.snapshot")
    later = sample_songs[4000:4100]
    blended_db.insert_songs([rec.song_row(s, 2) for s in later])
    songs = sample_songs[:4100]
    x = np.array([s.features() for s in songs])
    v2 = rec.fit_portable_model(x[::3], k=5, version=2)
    blended_db.insert_model(v2, {"similarity": {"artist_weight": 3.0, "multi_artist_rule": "mean"}})
    write_profiles(blended_db, 2, artist_profiles(standardized(v2, songs), keys_of(songs)), 2)

    index = asyncio.run(catalog.sync())
    assert index.model_version == 2 and len(index) == 4100 and index.artist_weight == 3.0
    full = asyncio.run(Catalog(blended_db.engine).reload("test"))
    assert full.model_version == 2
    # Not a full load: that reads the table in track-id order; the remodeled index keeps the
    # loaded rows' order (the later songs after the first 4,000).
    assert sorted(index.ids.tolist()) == full.ids.tolist() != index.ids.tolist()
    seeds = [s.track_id for s in (sample_songs[5], sample_songs[2000], later[50])]
    for track_id in seeds:
        a, b = index.position(track_id), full.position(track_id)
        assert np.array_equal(index.vectors_of([a]), full.vectors_of([b]))
        assert index.clusters[a] == full.clusters[b]
        got = rank(index, query_vector(index, [a]), limit=30, exclude=[a], seeds=[a])
        want = rank(full, query_vector(full, [b]), limit=30, exclude=[b], seeds=[b])
        assert [r.distance for r in got] == [r.distance for r in want]
