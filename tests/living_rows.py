"""A living playlist's rows as the listener tables hold them (shared by the recommender's
living tests and the whole-stack acceptance)."""

from __future__ import annotations

import sqlalchemy as sa

from emergify_contracts.listener import living_playlist_items, living_playlists


def desired(engine: sa.Engine, playlist_id: str) -> dict[str, float]:
    """The playlist's desired state: track id -> distance."""
    with engine.connect() as conn:
        return {
            r.track_id: r.distance
            for r in conn.execute(
                sa.select(living_playlist_items).where(
                    living_playlist_items.c.playlist_id == playlist_id
                )
            )
        }


def header(engine: sa.Engine, playlist_id: str) -> sa.Row:
    """The playlist's header row (version, status, refresh time, ...)."""
    with engine.connect() as conn:
        return conn.execute(
            sa.select(living_playlists).where(living_playlists.c.playlist_id == playlist_id)
        ).one()
