"""Living playlists: the desired state in the database, and the changes announced on Kafka.

What a living playlist *should* hold lives in ``living_playlist_items``; ``version`` bumps on
every change of it and ``synced_version`` records what the Spotify sync has applied. The sync
(:mod:`emergify_spotify.living_sync`) brings Spotify to the desired state, so a change is never
lost: it is in the database before anyone is told about it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from emergify_contracts.listener import (
    LivingPlaylistChange,
    living_playlist_items,
    living_playlists,
)
from emergify_contracts.problems import ProblemError
from emergify_contracts.topics import ensure_topics
from emergify_spotify.config import Settings

log = structlog.get_logger()


def listener_key(spotify_user_id: str) -> str:
    """The listener id of a signed-in Spotify user (docs/listener-loop.md)."""
    return f"spotify:{spotify_user_id}"


def spotify_user(listener_id: str) -> str | None:
    """The Spotify user whose tokens act for ``listener_id``; None for other listeners."""
    return listener_id.removeprefix("spotify:") if listener_id.startswith("spotify:") else None


@dataclass(frozen=True)
class Pending:
    """A living playlist whose Spotify copy lags behind its desired state."""

    playlist_id: str
    listener_id: str
    spotify_playlist_id: str
    version: int


class LivingStore:
    """The ``living_playlists`` and ``living_playlist_items`` tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        *,
        listener_id: str,
        name: str,
        size: int,
        max_popularity: int | None,
        max_per_artist: int,
        seeds: list[dict[str, Any]],
        taste: bool,
        items: list[tuple[str, float]],
    ) -> str:
        """A new living playlist at version 1 with its desired ``items``; its id."""
        playlist_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                living_playlists.insert().values(
                    playlist_id=playlist_id,
                    listener_id=listener_id,
                    spotify_playlist_id=None,
                    name=name,
                    size=size,
                    max_popularity=max_popularity,
                    max_per_artist=max_per_artist,
                    seeds=seeds,
                    taste=taste,
                    version=1,
                    synced_version=0,
                    songs_added=len(items),
                    created_at=now,
                    refreshed_at=now,
                    stopped_at=None,
                )
            )
            self._insert_items(conn, playlist_id, items, now)
        return playlist_id

    @staticmethod
    def _insert_items(
        conn: sa.Connection, playlist_id: str, items: list[tuple[str, float]], now: datetime
    ) -> None:
        if items:
            conn.execute(
                living_playlist_items.insert(),
                [
                    {"playlist_id": playlist_id, "track_id": t, "distance": d, "added_at": now}
                    for t, d in items
                ],
            )

    def attach_spotify(self, playlist_id: str, spotify_playlist_id: str) -> None:
        """Record the Spotify playlist that mirrors the living playlist."""
        with self.engine.begin() as conn:
            conn.execute(
                living_playlists.update()
                .where(living_playlists.c.playlist_id == playlist_id)
                .values(spotify_playlist_id=spotify_playlist_id)
            )

    def listed(self, listener_id: str) -> list[sa.Row]:
        """The listener's living playlists, newest first (stopped ones included)."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(living_playlists)
                    .where(living_playlists.c.listener_id == listener_id)
                    .order_by(living_playlists.c.created_at.desc())
                )
            )

    def get(self, listener_id: str, playlist_id: str) -> sa.Row:
        """The listener's living playlist; 404 when they have none of that id."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(living_playlists).where(
                    living_playlists.c.playlist_id == playlist_id,
                    living_playlists.c.listener_id == listener_id,
                )
            ).first()
        if row is None:
            raise ProblemError(404, f"you have no living playlist {playlist_id!r}")
        return row

    def items(self, playlist_id: str) -> list[sa.Row]:
        """The desired songs, nearest first."""
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(living_playlist_items)
                    .where(living_playlist_items.c.playlist_id == playlist_id)
                    .order_by(living_playlist_items.c.distance, living_playlist_items.c.track_id)
                )
            )

    def stop(self, listener_id: str, playlist_id: str) -> sa.Row:
        """Stop the subscription (idempotent: the first stop time stays)."""
        self.get(listener_id, playlist_id)
        with self.engine.begin() as conn:
            conn.execute(
                living_playlists.update()
                .where(
                    living_playlists.c.playlist_id == playlist_id,
                    living_playlists.c.stopped_at.is_(None),
                )
                .values(stopped_at=datetime.now(UTC))
            )
        return self.get(listener_id, playlist_id)

    def row(self, playlist_id: str) -> sa.Row:
        """The living playlist ``playlist_id`` (whoever owns it)."""
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(living_playlists).where(living_playlists.c.playlist_id == playlist_id)
            ).one()

    def due(self, refreshed_before: datetime) -> list[sa.Row]:
        """Active living playlists on Spotify last refreshed before ``refreshed_before``,
        the longest waiting first."""
        lp = living_playlists
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.select(lp)
                    .where(
                        lp.c.stopped_at.is_(None),
                        lp.c.spotify_playlist_id.is_not(None),
                        sa.or_(lp.c.refreshed_at.is_(None), lp.c.refreshed_at < refreshed_before),
                    )
                    .order_by(lp.c.refreshed_at, lp.c.playlist_id)
                )
            )

    def replace_items(
        self,
        playlist_id: str,
        items: list[tuple[str, float]],
        seeds: list[dict[str, Any]] | None = None,
        *,
        expect_version: int | None = None,
    ) -> int | None:
        """Make ``items`` the desired songs (songs that stay keep their added_at), and
        ``seeds`` the seeds when given; the new version.

        With ``expect_version``, a compare-and-set: nothing is written, and None returned,
        unless the playlist is still at that version and active (the version bump comes first, so on
        PostgreSQL a concurrent writer of the playlist waits for this transaction, then
        finds the version moved)."""
        now = datetime.now(UTC)
        t = living_playlist_items
        lp = living_playlists
        with self.engine.begin() as conn:
            claim = lp.update().where(lp.c.playlist_id == playlist_id)
            if expect_version is not None:
                claim = claim.where(lp.c.version == expect_version, lp.c.stopped_at.is_(None))
            if conn.execute(claim.values(version=lp.c.version + 1)).rowcount != 1:
                return None
            old = {
                row.track_id: row.added_at
                for row in conn.execute(
                    sa.select(t.c.track_id, t.c.added_at).where(t.c.playlist_id == playlist_id)
                )
            }
            conn.execute(t.delete().where(t.c.playlist_id == playlist_id))
            new = [(track, d) for track, d in items if track not in old]
            kept = [(track, d) for track, d in items if track in old]
            self._insert_items(conn, playlist_id, new, now)
            if kept:
                conn.execute(
                    t.insert(),
                    [
                        {
                            "playlist_id": playlist_id,
                            "track_id": track,
                            "distance": d,
                            "added_at": old[track],
                        }
                        for track, d in kept
                    ],
                )
            conn.execute(
                lp.update()
                .where(lp.c.playlist_id == playlist_id)
                .values(
                    songs_added=lp.c.songs_added + len(new),
                    refreshed_at=now,
                    **({} if seeds is None else {"seeds": seeds}),
                )
            )
            return conn.execute(
                sa.select(lp.c.version).where(lp.c.playlist_id == playlist_id)
            ).scalar_one()

    def pending(self) -> list[Pending]:
        """Active living playlists whose Spotify copy lags behind (oldest change first)."""
        lp = living_playlists
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    lp.c.playlist_id, lp.c.listener_id, lp.c.spotify_playlist_id, lp.c.version
                )
                .where(
                    lp.c.synced_version < lp.c.version,
                    lp.c.stopped_at.is_(None),
                    lp.c.spotify_playlist_id.is_not(None),
                )
                .order_by(lp.c.created_at)
            )
            return [
                Pending(r.playlist_id, r.listener_id, r.spotify_playlist_id, r.version)
                for r in rows
            ]

    def desired_ids(self, playlist_id: str) -> list[str]:
        """The desired track ids, nearest first."""
        return [row.track_id for row in self.items(playlist_id)]

    def mark_synced(self, playlist_id: str, version: int) -> None:
        """Record that Spotify holds the desired state of ``version`` (never moves back)."""
        lp = living_playlists
        with self.engine.begin() as conn:
            conn.execute(
                lp.update()
                .where(lp.c.playlist_id == playlist_id, lp.c.synced_version < version)
                .values(synced_version=version)
            )


class ChangePublisher:
    """Announces :class:`LivingPlaylistChange` on the living-playlists topic.

    Best effort by design: the change is already in the database, and the sync worker's sweep
    finds it even when the broker is away, only later.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._producer: AIOKafkaProducer | None = None

    async def publish(self, change: LivingPlaylistChange) -> bool:
        """Send ``change`` keyed by playlist (acks=all); whether the broker acknowledged it."""
        s = self.settings
        try:
            if self._producer is None:
                await ensure_topics(
                    s.kafka_bootstrap_servers,
                    [s.living_playlists_topic],
                    s.topic_partitions,
                    client_id="emergify-spotify-gateway",
                    request_timeout_ms=5_000,
                )
                producer = AIOKafkaProducer(
                    bootstrap_servers=s.kafka_bootstrap_servers,
                    client_id="emergify-spotify-gateway",
                    acks="all",
                    # The embedded broker does not support idempotent producers.
                    enable_idempotence=False,
                    request_timeout_ms=5_000,
                )
                await producer.start()
                self._producer = producer
            await self._producer.send_and_wait(
                s.living_playlists_topic,
                change.model_dump_json().encode(),
                key=change.playlist_id.encode(),
            )
            return True
        except Exception as exc:  # the sweep catches up; a broker outage must not fail a request
            log.warning(
                "living-playlist change not published; the sweep will sync it",
                playlist_id=change.playlist_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            await self.close()
            return False

    async def close(self) -> None:
        """Stop the producer (a later publish starts a new one)."""
        producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await producer.stop()
            except Exception as exc:
                log.debug("producer stop failed", error=str(exc))
