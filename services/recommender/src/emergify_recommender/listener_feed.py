"""The listener-change feed: which listeners' feedback just committed, so their cached
state is dropped and the next recommendation reads it afresh.

It follows its topic from the latest offset (:mod:`emergify_recommender.follower`): every
replica caches listener states and needs every event; on each (re)connection it forgets every
cached state instead of replaying, since events may have been missed while it was away.
"""

from __future__ import annotations

import structlog
from pydantic import ValidationError

from emergify_contracts.listener import ListenerChange
from emergify_recommender.config import Settings
from emergify_recommender.follower import FollowsTopics, KafkaFollower
from emergify_recommender.listeners import ListenerStates

log = structlog.get_logger()


class ListenerFeed(FollowsTopics):
    """Consumes ``listener_changes_topic`` into :meth:`ListenerStates.invalidate`."""

    def __init__(self, settings: Settings, states: ListenerStates) -> None:
        self._settings = settings
        self._states = states
        self.events_applied = 0
        self._follower = KafkaFollower(
            settings,
            "listener feed",
            (settings.listener_changes_topic,),
            self._handle,
            client_id="emergify-recommender-listeners",
            on_connect=self._forget_all,
            # Short polls: feedback must reach the next answer within seconds.
            poll_ms=200,
        )

    async def _forget_all(self) -> None:
        # Whatever changed while disconnected is unknown: read every listener afresh.
        self._states.clear()

    async def _handle(self, topic: str, value: bytes | None) -> None:
        self._apply(value)

    def _apply(self, value: bytes | None) -> None:
        if value is None:
            return
        try:
            change = ListenerChange.model_validate_json(value)
        except ValidationError as exc:
            log.warning("ignoring malformed listener change", error=str(exc)[:500])
            return
        self._states.invalidate(change.listener_ids, change.version)
        self.events_applied += 1
