"""Artist profiles: Spark SQL equals the numpy reference, the sink keeps them current exactly
once, a retrain recomputes them from the master dataset (docs/similarity.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from kafka_io import read_topic

from emergify_cli.broker import EmbeddedBroker, create_topics
from emergify_contracts.artist_profiles import ArtistProfiles, artist_keys, artist_profiles
from emergify_contracts.events import CatalogChange, SongEvent
from emergify_contracts.model import PortableModel
from emergify_contracts.song import AUDIO_FEATURES
from emergify_contracts.tables import (
    artist_profiles as profiles_table,
)
from emergify_contracts.tables import (
    create_tables,
    make_engine,
    model_versions,
    songs,
)
from emergify_ingest.master_dataset import MasterDataset
from emergify_stream.batch.artist_profiles import (
    PROFILE_INPUT_COLUMNS,
    ProfileRows,
    compare_with_table,
    read_profiles,
    reconcile_with_table,
    song_digests,
    spark_profiles,
    write_profiles,
)
from emergify_stream.batch.model_training import catalog_frame, run_batch_layer
from emergify_stream.batch.rebuild import rebuild
from emergify_stream.model_registry import ModelRegistry
from emergify_stream.publisher import EventPublisher
from emergify_stream.speed.feature_table import FeatureTableSink, table_version
from emergify_stream.speed.speed_layer import SpeedLayer

from .test_stream_feature_table import song_row
from .test_stream_model_training import catalog_batch
from .test_stream_rebuild import settings_for, write_lake
from .test_stream_speed_layer import load_songs, wait_for

T1 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
NEW_ARTIST_ID = "0" * 21 + "Z"


def handmade_model(batch: pd.DataFrame, version: int = 1) -> PortableModel:
    """A model whose scaler is the batch's own (clusters do not matter here)."""
    x = batch[list(AUDIO_FEATURES)].to_numpy(dtype=np.float64)
    return PortableModel(
        version=version,
        trained_at=T1,
        means=x.mean(axis=0).tolist(),
        scales=(x.std(axis=0) + 0.5).tolist(),
        components=np.eye(9)[:, :2].tolist(),
        centroids=[[0.0, 0.0], [1.0, 1.0]],
        k=2,
        silhouette=0.5,
        songs=len(batch),
    )


def table_reference(engine: sa.Engine, model: PortableModel) -> ArtistProfiles:
    """The numpy reference over every song the feature table holds now."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(songs.c.artists, songs.c.artist_ids, *(songs.c[f] for f in AUDIO_FEATURES))
        ).all()
    x = np.array([[r._mapping[f] for f in AUDIO_FEATURES] for r in rows], dtype=np.float64)
    keys = [artist_keys(r.artists, r.artist_ids) for r in rows]
    return artist_profiles(model.standardize(x), keys)


def stored(engine: sa.Engine, version: int) -> ProfileRows:
    with engine.connect() as conn:
        return read_profiles(conn, version)


def assert_matches(rows: ProfileRows, reference: ArtistProfiles) -> None:
    got = rows.profiles
    live = {k: i for i, k in enumerate(got.keys) if got.counts[i] > 0}
    assert set(live) == set(reference.keys)
    order = [live[k] for k in reference.keys]
    np.testing.assert_array_equal(got.counts[order], reference.counts)
    np.testing.assert_allclose(got.sums[order], reference.sums, rtol=1e-9, atol=1e-9)


def seeded_sink(
    database_url: str, sample_csv: Path
) -> tuple[sa.Engine, FeatureTableSink, PortableModel, pd.DataFrame]:
    """300 sample songs in the table, then a model whose profiles are the reference's."""
    engine = make_engine(database_url)
    create_tables(engine)
    registry = ModelRegistry(engine)
    sink = FeatureTableSink(engine, registry)
    batch = catalog_batch(sample_csv).iloc[:300].reset_index(drop=True)
    first = sink.write("seed", 0, batch)
    # Before the first model there is no scaler: no profile rows, no artists announced.
    assert first.applied and first.artists_changed == [] and first.profiles_model_version is None
    model = handmade_model(batch)
    reference = table_reference(engine, model)
    rows = ProfileRows({}, {}, reference)

    def write(conn: sa.Connection) -> None:
        write_profiles(conn, rows, model.version, 1)

    registry.publish(model, {}, None, in_transaction=write)
    return engine, sink, model, batch


def test_streamed_songs_update_their_artists_profiles_exactly_once(
    database_url: str, sample_csv: Path
) -> None:
    engine, sink, model, batch = seeded_sink(database_url, sample_csv)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(profiles_table)).scalar() > 0
    later = pd.Timestamp(T1 + timedelta(days=1)).tz_convert(None)

    # A new song by a new artist: the artist gets a row equal to the reference.
    new = batch.iloc[[0]].copy()
    new["track_id"] = "1" * 22
    new["artists"] = [["Brand New Artist"]]
    new["artist_ids"] = [[NEW_ARTIST_ID]]
    new["genres"] = [["shoegaze"]]
    new["danceability"] = 0.91
    new["ingested_at"] = later
    result = sink.write("stream", 0, new)
    assert result.artists_changed == [NEW_ARTIST_ID] and result.profiles_model_version == 1
    rows = stored(engine, 1)
    assert_matches(rows, table_reference(engine, model))
    i = rows.profiles.position()[NEW_ARTIST_ID]
    assert rows.profiles.counts[i] == 1 and rows.names[NEW_ARTIST_ID] == "Brand New Artist"
    assert rows.genres[NEW_ARTIST_ID] == {"shoegaze"}

    # A new song by an existing artist (the credits of sample song 5) updates that artist.
    existing = artist_keys(batch.at[5, "artists"], batch.at[5, "artist_ids"])
    count_before = rows.profiles.counts[rows.profiles.position()[existing[0]]]
    other = batch.iloc[[5]].copy()
    other["track_id"] = "2" * 22
    other["energy"] = 0.05
    other["ingested_at"] = later
    result = sink.write("stream", 1, other)
    assert result.artists_changed == sorted(existing)
    rows = stored(engine, 1)
    assert rows.profiles.counts[rows.profiles.position()[existing[0]]] == count_before + 1
    assert_matches(rows, table_reference(engine, model))

    # A changed song moves its contribution: the new artist's song now credits sample
    # song 5's artists, with other features.
    moved = new.copy()
    moved["artists"] = [list(batch.at[5, "artists"])]
    moved["artist_ids"] = [list(batch.at[5, "artist_ids"])]
    moved["tempo"] = 190.0
    moved["ingested_at"] = later + pd.Timedelta(minutes=1)
    result = sink.write("stream", 2, moved)
    assert set(result.artists_changed) == {NEW_ARTIST_ID, *existing}
    rows = stored(engine, 1)
    assert rows.profiles.counts[rows.profiles.position()[NEW_ARTIST_ID]] == 0
    assert_matches(rows, table_reference(engine, model))

    # Streamed twice (a replayed batch, and the same version in another batch): counted once.
    settled = stored(engine, 1).profiles
    replay = sink.write("stream", 2, moved)
    again = sink.write("stream", 3, moved)
    assert not replay.applied and again.applied and again.artists_changed == []
    after = stored(engine, 1).profiles
    assert after.keys == settled.keys
    np.testing.assert_array_equal(after.counts, settled.counts)
    np.testing.assert_array_equal(after.sums, settled.sums)
    engine.dispose()


@pytest.mark.spark
def test_spark_sql_profiles_equal_the_reference_on_the_sample_catalog(
    spark, sample_csv: Path
) -> None:
    batch = catalog_batch(sample_csv)
    model = handmade_model(batch)
    frame = catalog_frame(spark, batch[list(PROFILE_INPUT_COLUMNS)])
    rows = ProfileRows.from_frame(spark_profiles(spark, frame, model))

    x = batch[list(AUDIO_FEATURES)].to_numpy(dtype=np.float64)
    keys = [artist_keys(a, i) for a, i in zip(batch["artists"], batch["artist_ids"], strict=True)]
    reference = artist_profiles(model.standardize(x), keys)
    assert_matches(rows, reference)
    assert len(reference.keys) > 1000 and reference.counts.max() > 1  # artists with many songs
    # Genres: the union over the artist's single-artist songs (multi-artist tags are shared).
    expected: dict[str, set[str]] = {k: set() for k in reference.keys}
    for song_keys, genres in zip(keys, batch["genres"], strict=True):
        if len(song_keys) == 1:
            expected[song_keys[0]].update(genres)
    assert rows.genres == expected
    assert sum(bool(g) for g in expected.values()) > 100  # the sample carries Genres


@pytest.mark.spark
def test_a_retrain_recomputes_every_profile_and_the_stream_keeps_them_current(
    spark, broker: EmbeddedBroker, sqlite_url: str, sample_csv: Path, tmp_path: Path, producer
) -> None:
    settings = settings_for(tmp_path, sqlite_url, broker.bootstrap, trigger_interval_seconds=0.5)
    create_topics(broker.bootstrap, settings.topics(), 3)
    catalog = load_songs(sample_csv)
    write_lake(tmp_path / "lake", catalog[:1500])
    report = rebuild(spark, settings, None)
    assert report.model is not None
    model = report.model.model
    engine = make_engine(sqlite_url)
    assert_matches(stored(engine, model.version), table_reference(engine, model))
    with engine.connect() as conn:  # the genres of the upload reached the table
        assert any(r.genres for r in conn.execute(sa.select(songs.c.genres)))

    # A song streamed in with a new artist gets a correct profile, announced on the
    # catalog-changes topic with its artist key.
    registry = ModelRegistry(engine)
    publisher = EventPublisher(
        broker.bootstrap,
        settings.songs_dlq_topic,
        settings.catalog_changes_topic,
        settings.models_topic,
    )
    layer = SpeedLayer(spark, settings, FeatureTableSink(engine, registry, publisher))
    new = catalog[1500].model_copy(
        update={"artists": ["Nobody Before"], "artist_ids": [NEW_ARTIST_ID]}
    )
    event = SongEvent(upload_id="u-new", source="json", ingested_at=T1, song=new)
    # As ingest does: the master dataset first, then the broker.
    MasterDataset(settings.lake_uri).append(
        [new], [1], upload_id="u-new", chunk=0, source="json", ingested_at=T1
    )
    query = layer.start()
    try:
        producer(
            broker.bootstrap,
            settings.songs_topic,
            [(new.track_id.encode(), event.model_dump_json().encode())],
        )

        def profiled() -> bool:
            assert query.exception() is None, query.exception()
            return NEW_ARTIST_ID in stored(engine, model.version).profiles.position()

        wait_for(profiled, what="the new artist's profile")
    finally:
        layer.stop()
        publisher.close()
    assert_matches(stored(engine, model.version), table_reference(engine, model))
    changes = [
        CatalogChange.model_validate_json(v)
        for v in read_topic(broker.bootstrap, settings.catalog_changes_topic)
    ]
    assert any(
        NEW_ARTIST_ID in c.artists_changed for c in changes if new.track_id in c.upserted_ids
    )

    # A retrain over the master dataset writes every profile under the new version, in the
    # model's commit.
    run = run_batch_layer(spark, engine, settings, registry)
    assert run.model.version == model.version + 1
    assert_matches(stored(engine, run.model.version), table_reference(engine, run.model))
    assert run.metrics["artists"] == len(stored(engine, run.model.version).profiles.keys)
    # The similarity setting is stored with the model version (the recommender ranks by it).
    with engine.connect() as conn:
        metrics = conn.execute(
            sa.select(model_versions.c.metrics).where(model_versions.c.version == run.model.version)
        ).scalar_one()
    expected = {
        "artist_weight": settings.similarity_artist_weight,
        "multi_artist_rule": settings.similarity_multi_artist_rule,
    }
    assert metrics["similarity"] == run.metrics["similarity"] == expected
    engine.dispose()


def test_create_tables_adds_artist_keys_to_an_older_songs_table(database_url: str) -> None:
    engine = make_engine(database_url)
    create_tables(engine)
    with engine.begin() as conn:  # as a database made before the column existed
        conn.execute(sa.text("ALTER TABLE songs DROP COLUMN artist_keys"))
    create_tables(engine)
    columns = {c["name"] for c in sa.inspect(engine).get_columns("songs")}
    assert "artist_keys" in columns
    sink = FeatureTableSink(engine, ModelRegistry(engine))
    row = song_row(7)
    sink.write("q", 0, pd.DataFrame([row]))
    with engine.connect() as conn:
        stored_keys = conn.execute(sa.select(songs.c.artist_keys)).scalar_one()
    assert stored_keys == list(artist_keys(row["artists"], row["artist_ids"]))
    engine.dispose()


def snapshot_frame(spark, batch: pd.DataFrame):  # type: ignore[no-untyped-def]
    """The batch as the Spark rows a retrain reads (the profile columns only)."""
    lists = {"artists", "artist_ids", "genres"}
    schema = ", ".join(
        f"{c} array<string>"
        if c in lists
        else f"{c} timestamp"
        if c == "ingested_at"
        else f"{c} string"
        if c == "track_id"
        else f"{c} double"
        for c in PROFILE_INPUT_COLUMNS
    )
    return spark.createDataFrame(batch[list(PROFILE_INPUT_COLUMNS)], schema=schema)


LAKE_ONLY = 3_000


@pytest.mark.spark
def test_a_reconcile_over_a_bulk_load_moves_exactly_the_songs_that_differ(
    spark, sqlite_url: str
) -> None:
    # A bulk load: every one of 50k songs is recent, so all are compared; a few differ.
    recent, old = 50_000, 1_000
    engine = make_engine(sqlite_url)
    create_tables(engine)
    sink = FeatureTableSink(engine, ModelRegistry(engine))
    long_ago = T1 - timedelta(days=1)
    rows = [song_row(i, ingested_at=T1) for i in range(recent)]
    rows += [song_row(i, ingested_at=long_ago) for i in range(recent, recent + old)]
    for r in rows:
        i = int(r["track_id"])
        r["artists"] = [f"Artist {i % 997}"]
        r["danceability"] = (i % 101) / 100
    batch = pd.DataFrame(rows, columns=rows[0].keys())
    assert sink.write("seed", 0, batch).applied
    with engine.connect() as conn:
        since = table_version(conn)
    # The snapshot also holds songs the table does not have yet (a training during a bulk
    # load reads more than the speed layer has written): some by the table's artists, some
    # by artists the table has no song of.
    lake_rows = [song_row(i, ingested_at=T1) for i in range(90_001, 90_001 + LAKE_ONLY)]
    for r in lake_rows:
        i = int(r["track_id"])
        r["artists"] = [f"Artist {i % 997}"] if i % 2 else [f"Lake Artist {i % 50}", "Artist 3"]
        r["danceability"] = (i % 89) / 100
    lake_only = pd.DataFrame(lake_rows)
    snapshot = snapshot_frame(spark, pd.concat([batch, lake_only], ignore_index=True))
    model = handmade_model(batch)

    # After the snapshot the table changes: features, artists, genres, an old song's
    # features (same ingested_at, later offset: found by table version only), new songs.
    later = T1 + timedelta(minutes=1)
    changed = [song_row(i, ingested_at=later) for i in (5, 6, 7, 8, 9)]
    changed[0]["danceability"] = 0.99
    changed[1]["tempo"] = 180.0
    changed[2]["valence"] = 0.01
    changed[3]["artists"] = ["Somebody New"]
    changed[4]["genres"] = ["shoegaze", "indie"]
    changed[4]["artists"] = ["Artist 9"]
    changed[4]["danceability"] = (9 % 101) / 100
    for r in changed[:3]:
        r["artists"] = [f"Artist {int(r['track_id']) % 997}"]
    old_one = song_row(recent + 3, ingested_at=long_ago, offset=10**6)
    old_one["artists"] = [f"Artist {(recent + 3) % 997}"]
    old_one["energy"] = 0.93
    new_songs = [song_row(i, ingested_at=later) for i in (80_001, 80_002)]
    assert sink.write("later", 1, pd.DataFrame([*changed, old_one, *new_songs])).applied

    lake = pd.concat([batch, lake_only], ignore_index=True)
    keys = [artist_keys(a, i) for a, i in zip(lake["artists"], lake["artist_ids"], strict=True)]
    x = lake[list(AUDIO_FEATURES)].to_numpy(dtype=np.float64)
    profiles = ProfileRows({}, {}, artist_profiles(model.standardize(x), keys))
    alone = ProfileRows({}, {}, profiles.profiles)  # the same, reconciled in one go below
    with engine.connect() as conn:
        compared = compare_with_table(conn, profiles, snapshot, model, since)
    # The 50k recent songs, the lake-only ones, the two new ones and the old changed one.
    assert compared.compared == recent + LAKE_ONLY + 2 + 1
    # Only the songs the table holds differently are held in full: five changed, two new,
    # one old; the lake-only ones left the profiles in bulk.
    assert len(compared.songs) == 5 + 2 + 1
    assert sorted(compared.absent.to_pylist()) == sorted(lake_only["track_id"])
    assert_matches(profiles, table_reference(engine, model))
    assert profiles.names["name:somebody new"] == "Somebody New"
    assert {"shoegaze", "indie"} <= profiles.genres["name:artist 9"]

    # Before the publishing transaction the table changes again: a compared song once more,
    # an old song nobody compared, a lake-only song arrives; only these are caught up.
    again = song_row(5, ingested_at=later + timedelta(minutes=1))
    again["danceability"] = 0.01
    another_old = song_row(recent + 7, ingested_at=long_ago, offset=10**6)
    another_old["artists"] = ["Somebody Else"]
    arrived = song_row(90_001, ingested_at=T1, offset=10**6)
    assert sink.write("last", 0, pd.DataFrame([again, another_old, arrived])).applied
    with engine.begin() as conn:
        assert reconcile_with_table(conn, profiles, snapshot, model, since, compared) == 3
    assert_matches(profiles, table_reference(engine, model))
    assert profiles.names["name:somebody else"] == "Somebody Else"
    # Without the comparison beforehand the transaction compares everything itself.
    with engine.begin() as conn:
        assert reconcile_with_table(conn, alone, snapshot, model, since) == (
            recent + LAKE_ONLY + 2 + 2
        )
    assert_matches(alone, table_reference(engine, model))
    engine.dispose()


def test_song_digests_are_equal_exactly_when_the_profile_inputs_are() -> None:
    # The reconcile compares digests, computed by Spark's workers on one side and the driver
    # on the other: the same song must digest the same whatever the container (list, NumPy
    # array, None for empty) and the float's spelling (NaN, -0.0); any real change must not.
    base = song_row(1)
    base.update(artists=["A", "B"], artist_ids=["x", "y"], genres=[], danceability=0.0)
    spelled = {
        **base,
        "artists": np.array(["A", "B"], dtype=object),
        "genres": None,
        "danceability": -0.0,
    }
    with_nan = {**base, "tempo": float("nan")}
    with_other_nan = {**base, "tempo": np.float64("nan") * -1}
    changes = [
        {**base, "artists": ["B", "A"]},
        {**base, "artists": ["AB"]},
        {**base, "artists": ["A", "B", ""]},
        {**base, "artist_ids": ["x", "z"]},
        {**base, "genres": [""]},
        {**base, "genres": ["rock"]},
        {**base, "danceability": 1e-12},
        {**base, "tempo": float("nan")},
        *({**base, f: base[f] + 0.5} for f in AUDIO_FEATURES),
    ]
    rows = [base, spelled, with_nan, with_other_nan, *changes]
    digests = song_digests(pd.DataFrame(rows, columns=list(base)))
    assert digests[0] == digests[1]
    assert digests[2] == digests[3]
    assert len(set(digests[[0, *range(4, len(rows))]].tolist())) == 1 + len(changes)
    # Deterministic across calls (and so across processes: no per-process hash seed).
    assert (song_digests(pd.DataFrame(rows, columns=list(base))) == digests).all()
