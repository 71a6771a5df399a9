"""Re-ranking a living playlist: on demand (``POST .../refresh``) and on a schedule.

A refresh asks the recommender for the ``size`` nearest songs to the playlist's seeds (re-drawn
from the listener's Spotify history for taste playlists) under the listener's current rules,
and makes them the desired state. The write is a compare-and-set on the playlist's ``version``
(:meth:`~emergify_spotify.living.LivingStore.replace_items`): a matching write of the
recommender, or another refresh, that lands between the ranking and the write makes this one
rank again (or, for a scheduled refresh, find the playlist no longer due).

The schedule (:class:`RefreshScheduler`) runs in the spotify-gateway process next to the sync
worker. It keeps no timer of its own: every check reads which active playlists were last
refreshed more than ``living_refresh_interval_seconds`` ago, so a restart loses nothing and a
refresh that committed is never redone. Spotify is then brought to the new desired state by the
sync worker's diff (idempotent), and the change is announced for the recommender's replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import structlog

from emergify_contracts.listener import LivingPlaylistChange
from emergify_contracts.problems import ProblemError
from emergify_spotify.catalog import Catalog, CatalogUnavailableError
from emergify_spotify.config import Settings
from emergify_spotify.living import ChangePublisher, LivingStore, spotify_user
from emergify_spotify.living_sync import SyncWorker
from emergify_spotify.recommend import Ask, recommend
from emergify_spotify.spotify_api import SpotifyApi
from emergify_spotify.taste import TasteSeed, taste_seeds
from emergify_spotify.tokens import TokenStore

log = structlog.get_logger()

#: Attempts at a refresh whose compare-and-set keeps losing to concurrent writes.
MAX_ATTEMPTS = 3


def taste(api: SpotifyApi, catalog: Catalog, settings: Settings, limit: int) -> list[TasteSeed]:
    """The listener's strongest catalog seeds; 503 when the catalog cannot say, 422 when the
    listener's history holds no catalog song."""
    try:
        seeds = taste_seeds(api, catalog, limit, settings.taste_half_life_days)
    except CatalogUnavailableError as exc:
        raise ProblemError(503, f"{exc}; try again shortly", headers={"Retry-After": "5"}) from None
    if not seeds:
        raise ProblemError(
            422,
            "none of your Spotify top tracks or liked songs is in Emergify's catalog, so there "
            "is nothing to recommend from: upload songs you like (POST /api/v1/songs)",
            title="No seeds in the catalog",
        )
    return seeds


def seed_dicts(seeds: list[TasteSeed]) -> list[dict[str, Any]]:
    """Seeds as stored in ``living_playlists.seeds``."""
    return [{"track_id": s.track_id, "weight": s.weight, "why": s.why} for s in seeds]


def rank(
    recommender: httpx.Client,
    listener_id: str,
    *,
    seeds: list[dict[str, Any]],
    size: int,
    max_popularity: int | None,
    max_per_artist: int,
) -> list[tuple[str, float]]:
    """The ``size`` nearest songs to ``seeds`` for the Spotify user ``listener_id``, with the
    listener's rules (dislikes, bans) applied by the recommender."""
    answer = recommend(
        recommender,
        Ask(
            seeds=[s["track_id"] for s in seeds],
            weights=[s["weight"] for s in seeds],
            limit=size,
            max_popularity=max_popularity,
            max_per_artist=max_per_artist,
            # A living playlist keeps its songs: the listener's recent history must not push
            # them out on the next re-rank.
            include_recent=True,
        ),
        listener_id,
    )
    return [(item["track_id"], float(item["distance"])) for item in answer["items"]]


def refresh(
    store: LivingStore,
    row: sa.Row,
    api: SpotifyApi,
    catalog: Catalog,
    recommender: httpx.Client,
    settings: Settings,
    *,
    due_before: datetime | None = None,
) -> int | None:
    """Re-rank the living playlist ``row`` and store the result; its new version.

    None when a concurrent write won and the playlist is stopped, or (``due_before`` given,
    the scheduled case) no longer last refreshed before ``due_before``.
    """
    for _ in range(MAX_ATTEMPTS):
        if row.stopped_at is not None:
            return None
        if due_before is not None and not _older(row.refreshed_at, due_before):
            return None
        seeds = (
            seed_dicts(taste(api, catalog, settings, settings.taste_max_seeds))
            if row.taste
            else list(row.seeds)
        )
        items = rank(
            recommender,
            api.listener_id,
            seeds=seeds,
            size=row.size,
            max_popularity=row.max_popularity,
            max_per_artist=row.max_per_artist,
        )
        version = store.replace_items(
            row.playlist_id, items, seeds if row.taste else None, expect_version=row.version
        )
        if version is not None:
            return version
        row = store.row(row.playlist_id)  # someone wrote meanwhile: rank again on fresh state
    raise ProblemError(
        409,
        "the living playlist kept changing while it was being re-ranked; try again",
        headers={"Retry-After": "1"},
    )


def _older(value: datetime | None, cutoff: datetime) -> bool:
    if value is None:
        return True
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return (value.replace(tzinfo=UTC) if value.tzinfo is None else value) < cutoff


class RefreshScheduler:
    """Re-ranks every active living playlist last refreshed more than
    ``living_refresh_interval_seconds`` ago (daily by default)."""

    def __init__(
        self,
        settings: Settings,
        store: LivingStore,
        tokens: TokenStore,
        recommender: httpx.Client,
        sync: SyncWorker,
        publisher: ChangePublisher,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tokens = tokens
        self.recommender = recommender
        self.sync = sync
        self.publisher = publisher
        self.refreshes = 0
        self.checks = 0  # completed checks of what is due
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> timedelta:
        return timedelta(seconds=self.settings.living_refresh_interval_seconds)

    @property
    def check_seconds(self) -> float:
        """How often the database is asked what is due: a tenth of the interval, between 1 s
        and a minute (a refresh is at most that late)."""
        return min(max(self.settings.living_refresh_interval_seconds / 10, 1.0), 60.0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="living-refresh")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def refresh_due(self, now: datetime | None = None) -> list[LivingPlaylistChange]:
        """Refresh every due playlist once (blocking); the changes made, to announce."""
        cutoff = (now or datetime.now(UTC)) - self.interval
        changes: list[LivingPlaylistChange] = []
        catalog = Catalog(self.recommender)
        for row in self.store.due(cutoff):
            user = spotify_user(row.listener_id)
            if user is None or self.tokens.load(user) is None:
                log.warning(
                    "living playlist not refreshed: the listener's Spotify tokens are gone",
                    playlist_id=row.playlist_id,
                    listener_id=row.listener_id,
                )
                continue
            api = SpotifyApi(self.settings, self.tokens, user)
            try:
                version = refresh(
                    self.store,
                    row,
                    api,
                    catalog,
                    self.recommender,
                    self.settings,
                    due_before=cutoff,
                )
            except ProblemError as exc:  # the recommender or Spotify is away: next check
                log.warning(
                    "scheduled refresh failed; will retry",
                    playlist_id=row.playlist_id,
                    status=exc.status,
                    detail=exc.detail,
                )
                continue
            if version is None:
                continue  # refreshed or stopped by someone else meanwhile
            self.refreshes += 1
            log.info("living playlist refreshed", playlist_id=row.playlist_id, version=version)
            changes.append(LivingPlaylistChange(playlist_id=row.playlist_id, version=version))
            try:
                self.sync.sync_now(row.playlist_id)
            except ProblemError as exc:  # stays pending: the sync worker's sweep retries
                log.warning(
                    "refreshed playlist not synced yet; the sweep will",
                    playlist_id=row.playlist_id,
                    status=exc.status,
                    detail=exc.detail,
                )
        return changes

    async def _loop(self) -> None:
        while True:
            try:
                changes = await asyncio.to_thread(self.refresh_due)
                for change in changes:
                    await self.publisher.publish(change)
                self.checks += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be briefly away
                log.warning("scheduled refresh check failed", error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(self.check_seconds)
