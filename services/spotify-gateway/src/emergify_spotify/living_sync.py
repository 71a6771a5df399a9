"""The living-playlist sync worker: brings each Spotify playlist to its desired state.

It runs in the spotify-gateway process. A :class:`LivingPlaylistChange` on the living-playlists
topic (its own consumer group) wakes it at once; a sweep every
``living_sync_interval_seconds``, and one at start, finds whatever an event did not bring (a
lost event, a crash mid-sync, a broker outage). Each pending playlist is synced with
:func:`~emergify_spotify.playlist_sync.sync_playlist`, a diff against what Spotify holds, so a
repeated or interrupted sync adds nothing twice; ``synced_version`` is recorded only after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

import structlog
from aiokafka import AIOKafkaConsumer

from emergify_contracts.problems import ProblemError
from emergify_contracts.topics import ensure_topics
from emergify_spotify.config import Settings
from emergify_spotify.living import LivingStore, Pending, spotify_user
from emergify_spotify.playlist_sync import SyncResult, sync_playlist
from emergify_spotify.spotify_api import SpotifyApi
from emergify_spotify.tokens import TokenStore

log = structlog.get_logger()


class SyncWorker:
    """Event-driven and sweeping sync of every pending living playlist."""

    def __init__(self, settings: Settings, store: LivingStore, tokens: TokenStore) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.wake = asyncio.Event()
        self.syncs = 0
        self.consuming = False  # joined the group with positions resolved: sees the next event
        # One sync at a time in this process: two diffs of one playlist at once could both add
        # the same missing song.
        self._lock = threading.Lock()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """Start the sweep loop and the consumer."""
        self._tasks = [
            asyncio.create_task(self._sweep_loop(), name="living-sync-sweep"),
            asyncio.create_task(self._consume(), name="living-sync-consumer"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def sync_now(self, playlist_id: str) -> SyncResult | None:
        """Sync ``playlist_id`` now if it is pending (blocking); None when there was nothing
        to do or it was skipped."""
        for pending in self.store.pending():
            if pending.playlist_id == playlist_id:
                return self.sync_one(pending)
        return None

    def sync_one(self, pending: Pending) -> SyncResult | None:
        """Sync one playlist (blocking); None when it was skipped and stays pending."""
        with self._lock:
            return self._sync_one(pending)

    def _sync_one(self, pending: Pending) -> SyncResult | None:
        user = spotify_user(pending.listener_id)
        if user is None or self.tokens.load(user) is None:
            log.warning(
                "living playlist not synced: the listener's Spotify tokens are gone; "
                "it stays pending until they sign in again",
                playlist_id=pending.playlist_id,
                listener_id=pending.listener_id,
            )
            return None
        api = SpotifyApi(self.settings, self.tokens, user)
        desired = self.store.desired_ids(pending.playlist_id)
        result = sync_playlist(api, pending.spotify_playlist_id, desired)
        self.store.mark_synced(pending.playlist_id, pending.version)
        self.syncs += 1
        log.info(
            "living playlist synced",
            playlist_id=pending.playlist_id,
            version=pending.version,
            added=len(result.added),
            removed=len(result.removed),
        )
        return result

    def sweep(self) -> int:
        """Sync every pending playlist once (blocking); how many were synced."""
        done = 0
        for pending in self.store.pending():
            try:
                if self.sync_one(pending) is not None:
                    done += 1
            except ProblemError as exc:  # Spotify refused or is away: the next sweep retries
                log.warning(
                    "living playlist sync failed; will retry",
                    playlist_id=pending.playlist_id,
                    status=exc.status,
                    detail=exc.detail,
                )
        return done

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly away
                log.warning("living sweep failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.wake.wait(), timeout=self.settings.living_sync_interval_seconds
                )
            self.wake.clear()

    async def _consume(self) -> None:
        s = self.settings
        while True:
            consumer = AIOKafkaConsumer(
                s.living_playlists_topic,
                bootstrap_servers=s.kafka_bootstrap_servers,
                group_id=s.living_sync_group,
                client_id="emergify-spotify-living-sync",
                # The sweep at start covers whatever came before: no need to read history.
                auto_offset_reset="latest",
                metadata_max_age_ms=10_000,
                request_timeout_ms=10_000,
            )
            try:
                await ensure_topics(
                    s.kafka_bootstrap_servers,
                    [s.living_playlists_topic],
                    s.topic_partitions,
                    client_id="emergify-spotify-living-sync",
                    request_timeout_ms=5_000,
                )
                await consumer.start()
                while not consumer.assignment():  # the group assigns partitions after joining
                    if any((await consumer.getmany(timeout_ms=200)).values()):
                        self.wake.set()
                for tp in consumer.assignment():
                    await consumer.position(tp)
                self.consuming = True
                log.info("living sync consumer connected")
                while True:
                    batches = await consumer.getmany(timeout_ms=1000, max_records=100)
                    if any(batches.values()):
                        self.wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "living sync consumer unavailable; the sweep keeps syncing",
                    error=f"{type(exc).__name__}: {exc}",
                )
            finally:
                self.consuming = False
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await asyncio.sleep(5)
