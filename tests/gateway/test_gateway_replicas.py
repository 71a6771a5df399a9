"""Choosing a replica: least in flight, equals in turn, down ones skipped; which routes may be
sent twice. (The processes themselves: tests/integration/test_recommender_replicas.py.)"""

from __future__ import annotations

from collections import Counter

from emergify_gateway.config import Settings
from emergify_gateway.replicas import ReplicaPool
from emergify_gateway.routes import ROUTES, service_urls

URLS = ["http://r1:8003", "http://r2:8003", "http://r3:8003"]


def test_equal_replicas_take_turns() -> None:
    pool = ReplicaPool("recommender", URLS)
    picks = Counter(pool.pick().url for _ in range(30))  # type: ignore[union-attr]
    assert picks == dict.fromkeys(URLS, 10)


def test_the_least_busy_replica_takes_the_next_request() -> None:
    pool = ReplicaPool("recommender", URLS)
    r1, r2, r3 = pool.replicas
    leases = [pool.lease(r1), pool.lease(r1), pool.lease(r2)]
    assert pool.pick() is r3
    for lease in leases:
        lease.release()
        lease.release()  # a second release changes nothing
    assert [r.in_flight for r in pool.replicas] == [0, 0, 0]


def test_down_and_excluded_replicas_are_skipped_and_none_up_is_none() -> None:
    pool = ReplicaPool("recommender", URLS)
    r1, r2, r3 = pool.replicas
    pool.mark_down(r1, "connection refused")
    assert {pool.pick().url for _ in range(10)} == {r2.url, r3.url}  # type: ignore[union-attr]
    assert pool.pick(frozenset({r2.url})) is r3
    pool.mark_down(r2, "broke")
    pool.mark_down(r3, "broke")
    assert pool.pick() is None
    assert pool.summary().status == "unavailable"


def test_a_single_service_is_always_tried() -> None:
    pool = ReplicaPool("ingest", ["http://ingest:8001"])
    only = pool.replicas[0]
    pool.mark_down(only, "connection refused")
    assert pool.pick() is only
    assert pool.pick(frozenset({only.url})) is None  # no *other* replica to retry on


def test_recommender_urls_setting_and_the_single_url_fallback() -> None:
    many = Settings(
        _env_file=None,  # type: ignore[call-arg]
        allow_no_auth=True,
        recommender_urls=" http://a:1/, http://b:2 ,,",
    )
    assert service_urls(many)["recommender"] == ["http://a:1", "http://b:2"]
    one = Settings(_env_file=None, allow_no_auth=True, recommender_url="http://c:3/")  # type: ignore[call-arg]
    assert service_urls(one)["recommender"] == ["http://c:3"]
    assert service_urls(one)["ingest"] == [one.ingest_url]


def test_uploads_are_never_sent_twice_and_recommendations_may_be() -> None:
    for route in ROUTES:
        if route.upload:
            assert not route.idempotent, route.path
        assert route.idempotent <= route.methods | {"HEAD"}, route.path
    recommend = next(r for r in ROUTES if r.path == "/api/v1/recommendations")
    assert recommend.idempotent == {"POST"}
    feedback = next(r for r in ROUTES if r.path == "/api/v1/feedback")
    assert not feedback.idempotent
