"""The embedded broker restarted (it forgets every topic): listener feedback accepted before
and while it was away still reaches the listener tables, from the master dataset, and an
erasure stays an erasure (what it erased never comes back).

Real parts only, as in test_broker_restart.py: the embedded broker, the ingest app over HTTP,
the stream processor as its own process (Spark inside), PostgreSQL.
"""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from catalog_fixtures import track_id
from pipeline_parts import WritePath
from testkit import INTERNAL_HEADERS, answers_200, wait_for

from emergify_cli.broker import EmbeddedBroker
from emergify_contracts.listener import listener_batches, listener_feedback
from emergify_contracts.tables import make_engine


def post_feedback(ingest_url: str, listener: str, track: str, signal: str) -> httpx.Response:
    return httpx.post(
        f"{ingest_url}/api/v1/feedback",
        json={"track_id": track, "signal": signal, "listener_id": listener},
        timeout=30,
        headers=INTERNAL_HEADERS,
    )


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.postgres
def test_feedback_accepted_around_a_broker_restart_all_reaches_the_listener_tables(
    stack: WritePath, fresh_broker: EmbeddedBroker, pg_url: str
) -> None:
    ingest_url, processor_url, proc = stack.ingest_url, stack.processor_url, stack.processor
    engine = make_engine(pg_url)

    def stored() -> list[tuple[str, str, str]]:
        try:
            with engine.connect() as conn:
                return [
                    (r.listener_id, r.track_id, r.signal)
                    for r in conn.execute(
                        sa.select(listener_feedback).order_by(
                            listener_feedback.c.listener_id, listener_feedback.c.at
                        )
                    )
                ]
        except sa.exc.ProgrammingError:  # the processor has not created the tables yet
            return []

    proc.wait_healthy(processor_url)
    a, b, c, d, e = (track_id(i * 7919 + 5) for i in range(5))
    kept, erased, late = "spotify:kept", "spotify:erased", "spotify:late"

    for listener, track, signal in ((kept, a, "like"), (kept, b, "dislike"), (erased, c, "like")):
        r = post_feedback(ingest_url, listener, track, signal)
        assert r.status_code == 202, r.text
    wait_for(lambda: len(stored()) == 3, 120, "the first feedback in the listener tables")
    r = httpx.delete(
        f"{ingest_url}/api/v1/listeners/{erased}/feedback", timeout=30, headers=INTERNAL_HEADERS
    )
    assert r.status_code == 202, r.text
    wait_for(lambda: len(stored()) == 2, 120, "the erasure applied")

    fresh_broker.stop()
    # Accepted while the broker is away: 503, but safe in the master dataset.
    for listener, track, signal in ((kept, c, "like"), (late, d, "ban_artist")):
        r = post_feedback(ingest_url, listener, track, signal)
        assert r.status_code == 503, r.text
    fresh_broker.start()  # the same port, no topics

    answers: list[httpx.Response] = []

    def accepted() -> bool:
        answers.append(post_feedback(ingest_url, kept, e, "skip"))
        status = answers[-1].status_code
        assert status in (202, 503), status  # 503 until the ingest reconnects
        return status == 202

    wait_for(accepted, 60, "feedback to get a 202 again", interval=0.5)
    after_restart = answers[-1].json()["event_id"]
    refused = len(answers) - 1  # kept in the master dataset too, with other event ids

    def stored_ids() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(sa.select(listener_feedback.c.event_id)).scalars())

    skip = (kept, e, "skip")
    expected = [
        (kept, a, "like"),
        (kept, b, "dislike"),
        (kept, c, "like"),
        skip,
        (late, d, "ban_artist"),
    ]

    def all_arrived() -> bool:
        got = stored()
        # A refused retry of the skip may come back too, if a reconcile read the lake after it.
        retries = got.count(skip) - 1
        return (
            [r for r in got if r != skip] == [r for r in expected if r != skip]
            and 0 <= retries <= refused
            and after_restart in stored_ids()
        )

    wait_for(all_arrived, 150, "every accepted event in the listener tables")
    with engine.connect() as conn:
        restored = conn.execute(
            sa.select(sa.func.count()).where(listener_batches.c.query_name.like("reconcile-%"))
        ).scalar()
    assert restored >= 1  # the events accepted while the broker was away came from the lake
    assert proc.alive() and answers_200(f"{processor_url}/health")
    engine.dispose()
