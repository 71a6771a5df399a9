"""The change feed: catalog-change and model events from Kafka, applied to the catalog.

It follows its topics from the latest offset (:mod:`emergify_recommender.follower`): the
recommender loads the whole catalog at start. While the broker is away the app keeps
serving (the fallback poll keeps the catalog fresh meanwhile), and a failing event is logged
and skipped for the same reason.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from pydantic import ValidationError

from emergify_contracts.events import CatalogChange, ModelPublished
from emergify_recommender.catalog import Catalog
from emergify_recommender.config import Settings
from emergify_recommender.follower import FollowsTopics, KafkaFollower
from emergify_recommender.index import SongIndex

log = structlog.get_logger()

#: Called after a catalog change is applied, with the index that holds its songs.
ChangeHook = Callable[[CatalogChange, SongIndex], Awaitable[None]]


class ChangeFeed(FollowsTopics):
    """Consumes ``catalog_changes_topic`` and ``models_topic`` into a :class:`Catalog`."""

    def __init__(
        self, settings: Settings, catalog: Catalog, on_change: ChangeHook | None = None
    ) -> None:
        self._settings = settings
        self._catalog = catalog
        self._on_change = on_change  # living playlists match the change's songs
        self.events_applied = 0
        self._follower = KafkaFollower(
            settings,
            "change feed",
            (settings.catalog_changes_topic, settings.models_topic),
            self._apply,
            client_id="emergify-recommender",
            fetch_max_wait_ms=settings.change_feed_fetch_max_wait_ms,
        )

    async def _apply(self, topic: str, value: bytes | None) -> None:
        if value is None:
            return
        try:
            if topic == self._settings.catalog_changes_topic:
                change = CatalogChange.model_validate_json(value)
                index = await self._catalog.apply_change(change)
                if self._on_change is not None:
                    await self._on_change(change, index)
            elif topic == self._settings.models_topic:
                await self._catalog.apply_model(ModelPublished.model_validate_json(value))
            else:
                return
            self.events_applied += 1
        except ValidationError as exc:
            log.warning("ignoring malformed event", topic=topic, error=str(exc)[:500])
        except Exception as exc:
            # The database may be briefly unreachable; the poll catches up later.
            log.warning("event not applied", topic=topic, error=f"{type(exc).__name__}: {exc}")
