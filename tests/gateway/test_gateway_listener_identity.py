"""Who a request acts for: the gateway tells the services, and only the gateway may.

The real ingest service (real broker, real lake) behind the real gateway: feedback from a key
holder lands namespaced by the key, feedback from a signed-in listener lands as that listener,
and a caller cannot claim to be somebody else by sending the header itself.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from fastapi.testclient import TestClient
from testkit import wait_for

from emergify_contracts import session
from emergify_contracts.listener import CALLER_HEADER
from emergify_contracts.session import SESSION_COOKIE
from emergify_gateway.main import create_app as create_gateway
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest

SECRET = "gateway-test-session-secret-0123456789abcdef"
TRACK = "70kFiCsoYnJxMgIZ82WQmj"


def test_the_gateway_names_the_listener_and_nobody_else_can(
    broker, upstreams, serve, make_settings, admin, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    ingest = IngestSettings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_bootstrap_servers=broker.bootstrap,
        lake_uri=str(tmp_path / "lake"),
        songs_topic=f"songs.{tag}",
        feedback_topic=f"feedback.{tag}",
        kafka_connect_backoff_s=0.2,
    )
    served = serve(create_ingest(ingest))
    settings = make_settings(ingest_url=served.url, session_secret=SECRET)
    with TestClient(create_gateway(settings)) as gateway:
        body = {"track_id": TRACK, "signal": "dislike", "listener_id": "bob"}

        def post(**kwargs):
            return gateway.post("/api/v1/feedback", json=body, **kwargs)

        # The broker connection comes up in the background: wait for the first 202.
        keyed = wait_for(
            lambda: (r := post(headers=admin)).status_code == 202 and r,
            timeout=60,
            what="ingest to take feedback",
        )
        assert keyed.json()["listener_id"] == "key:admin:bob"

        forged = post(headers={**admin, CALLER_HEADER: "session:mallory"})
        assert forged.status_code == 202 and forged.json()["listener_id"] == "key:admin:bob"

        gateway.cookies.set(SESSION_COOKIE, session.sign("demo", SECRET, 3600))
        mine = gateway.post("/api/v1/feedback", json={"track_id": TRACK, "signal": "like"})
        assert mine.status_code == 202 and mine.json()["listener_id"] == "spotify:demo"
        other = post()  # a signed-in listener naming someone else
        assert other.status_code == 403
        gateway.cookies.clear()

        assert post().status_code == 401  # nobody at all
