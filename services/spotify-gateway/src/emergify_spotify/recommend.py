"""Asking the recommender for songs on a listener's behalf.

The request carries only the fields in use: a field the recommender may not know yet
(``seed_weights``, ``within_distance``, ``include_recent``) is sent only when it changes the
answer, so a recommender without it keeps answering everything else. The listener travels in
the caller header, as the api-gateway sets it, so the recommender applies their feedback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import httpx

from emergify_contracts.listener import CALLER_HEADER
from emergify_contracts.problems import ProblemError

#: The recommender's cap on `limit` with a fixed count, and with `within_distance`.
MAX_LIMIT = 100
MAX_WITHIN_LIMIT = 500


@dataclass
class Ask:
    """One recommendation request: seeds (with weights), the rules, the listener."""

    seeds: list[str]
    limit: int
    weights: list[float] | None = None
    max_popularity: int | None = None
    max_per_artist: int | None = None
    exclude_ids: list[str] = field(default_factory=list)
    include_recent: bool = False
    within_distance: float | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body, without the fields that would not change the answer."""
        body: dict[str, Any] = {"seeds": self.seeds, "limit": self.limit}
        # Equal weights rank as no weights at all.
        if self.weights is not None and any(w != 1.0 for w in self.weights):
            body["seed_weights"] = self.weights
        if self.max_popularity is not None:
            body["max_popularity"] = self.max_popularity
        if self.max_per_artist is not None:
            body["max_per_artist"] = self.max_per_artist
        if self.exclude_ids:
            body["exclude_ids"] = self.exclude_ids
        if self.include_recent:
            body["include_recent"] = True
        if self.within_distance is not None:
            body["within_distance"] = self.within_distance
        return body


def recommend(client: httpx.Client, ask: Ask, listener_id: str | None) -> dict[str, Any]:
    """The recommender's answer to ``ask`` for the Spotify user ``listener_id``.

    Its 4xx problems come back as 422 problems quoting its reason; an unreachable or failing
    recommender is a 503 with Retry-After.
    """
    headers = {CALLER_HEADER: f"session:{listener_id}"} if listener_id else {}
    body = ask.body()
    try:
        response = client.post("/api/v1/recommendations", json=body, headers=headers)
        # Fields a recommender may not know yet, where asking without them is the same
        # question: without include_recent it keeps no history to filter by; the `limit`
        # nearest songs cut at the threshold (below) are every song within it, up to `limit`.
        droppable = [
            name
            for name, same in (
                ("include_recent", True),
                ("within_distance", ask.limit <= MAX_LIMIT),
            )
            if name in body and same and _unknown_field(response, name)
        ]
        if droppable:
            for name in droppable:
                del body[name]
            response = client.post("/api/v1/recommendations", json=body, headers=headers)
    except httpx.HTTPError as exc:
        raise _unavailable(type(exc).__name__) from None
    if response.status_code == 200:
        answer = response.json()
        if ask.within_distance is not None:
            # The threshold is the contract: never let a song beyond it through.
            answer["items"] = [i for i in answer["items"] if i["distance"] <= ask.within_distance]
            answer["count"] = len(answer["items"])
        return answer
    if 400 <= response.status_code < 500 and response.status_code not in (401, 403, 429):
        raise ProblemError(
            422,
            f"the recommender refused the request: {_reason(response)}",
            title="Recommendation refused",
            recommender_status=response.status_code,
        )
    raise _unavailable(f"HTTP {response.status_code}: {_reason(response)}")


def _unknown_field(response: httpx.Response, name: str) -> bool:
    return response.status_code == 422 and f"body.{name}: Extra inputs" in _reason(response)


def _reason(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(problem, dict):
        return str(problem.get("detail") or problem.get("title") or problem)[:500]
    return str(problem)[:500]


def _unavailable(why: str) -> ProblemError:
    return ProblemError(
        503,
        f"the recommender is not available ({why}); try again shortly",
        title="Recommender unavailable",
        headers={"Retry-After": "5"},
    )
