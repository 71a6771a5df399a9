""" "Latest version wins" is one rule: every rendering of it picks the same row."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa

from emergify_contracts.versions import (
    LAKE_POSITION,
    STREAM_POSITION,
    arrow_sort_keys,
    latest_per_key_sql,
    newer_than,
    row_version_key,
    sort_columns,
)

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def versions(position: str, seed: int = 5) -> list[dict]:
    """Many versions of a few ids, with ties at every level of the key."""
    rng = random.Random(seed)
    rows = []
    for i in range(400):
        rows.append(
            {
                "track_id": f"id{rng.randrange(12)}",
                "ingested_at": T0 + timedelta(seconds=rng.randrange(3)),
                position: rng.choice([None, 0, 1, 2]),
                "upload_id": rng.choice([None, "u1", "u2"]),
                "n": i,
            }
        )
    return rows


def expected(rows: list[dict], position: str) -> dict[str, int]:
    best: dict[str, dict] = {}
    for r in rows:
        key = row_version_key(r, position)
        if r["track_id"] not in best or key > row_version_key(best[r["track_id"]], position):
            best[r["track_id"]] = r
    return {t: r["n"] for t, r in best.items()}


def test_pandas_and_arrow_pick_the_python_keys_latest() -> None:
    rows = versions(STREAM_POSITION)
    want = expected(rows, STREAM_POSITION)
    frame = pd.DataFrame(rows).astype({STREAM_POSITION: "Int64"})
    latest = frame.sort_values(
        sort_columns(STREAM_POSITION), kind="stable", na_position="first"
    ).drop_duplicates("track_id", keep="last")
    got = dict(zip(latest["track_id"], latest["n"], strict=True))
    # Exact duplicates of the whole key are equal versions: either is the latest.
    assert {
        t: row_version_key(frame.loc[frame.n == n].iloc[0].to_dict(), STREAM_POSITION)
        for t, n in got.items()
    } == {t: row_version_key(rows[n], STREAM_POSITION) for t, n in want.items()}

    lake_rows = versions(LAKE_POSITION, seed=9)
    table = pa.Table.from_pylist(lake_rows).sort_by(arrow_sort_keys(LAKE_POSITION))
    firsts: dict[str, int] = {}
    for r in table.to_pylist():
        firsts.setdefault(r["track_id"], r["n"])
    want = expected(lake_rows, LAKE_POSITION)
    assert {t: row_version_key(lake_rows[n], LAKE_POSITION) for t, n in firsts.items()} == {
        t: row_version_key(lake_rows[n], LAKE_POSITION) for t, n in want.items()
    }


def test_sql_window_and_upsert_condition_agree_with_the_python_key() -> None:
    rows = versions(STREAM_POSITION, seed=13)
    engine = sa.create_engine("sqlite://")
    meta = sa.MetaData()
    table = sa.Table(
        "v",
        meta,
        sa.Column("track_id", sa.String),
        sa.Column("ingested_at", sa.DateTime),
        sa.Column(STREAM_POSITION, sa.Integer),
        sa.Column("upload_id", sa.String),
        sa.Column("n", sa.Integer),
    )
    old = table.alias("old")
    meta.create_all(engine)
    plain = [{**r, "ingested_at": r["ingested_at"].replace(tzinfo=None)} for r in rows]
    with engine.begin() as conn:
        conn.execute(table.insert(), plain)
        sql = latest_per_key_sql("v", ["track_id", "n"], STREAM_POSITION, quote='"')
        got = dict(conn.execute(sa.text(sql)).all())
        # A row is the latest when no other row of its id is newer_than it.
        beaten = sa.exists().where(
            old.c.track_id == table.c.track_id, newer_than(old.c, table.c, STREAM_POSITION)
        )
        unbeaten = conn.execute(sa.select(table.c.track_id, table.c.n).where(~beaten)).all()
    key = {r["n"]: row_version_key(r, STREAM_POSITION) for r in plain}
    want = expected(plain, STREAM_POSITION)
    assert {t: key[n] for t, n in got.items()} == {t: key[n] for t, n in want.items()}
    assert {t: key[n] for t, n in unbeaten} == {t: key[n] for t, n in want.items()}
