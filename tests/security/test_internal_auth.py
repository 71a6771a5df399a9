"""Every internal service refuses a caller without the internal credential, and every service
refuses a Host it was not configured for (DNS rebinding), on real HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import serving
from testkit import INTERNAL_HEADERS, INTERNAL_TOKEN, wait_for

from emergify_cli.broker import free_port
from emergify_contracts.internal_auth import (
    INTERNAL_TOKEN_HEADER,
    InternalAuthNotConfiguredError,
)
from emergify_contracts.tables import create_tables, make_engine
from emergify_gateway.config import Settings as GatewaySettings
from emergify_gateway.main import create_app as create_gateway
from emergify_gateway.security import AuthNotConfiguredError
from emergify_ingest.config import Settings as IngestSettings
from emergify_ingest.main import create_app as create_ingest
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender
from emergify_spotify.config import Settings as SpotifySettings
from emergify_spotify.main import create_app as create_spotify
from emergify_stream.config import Settings as StreamSettings
from emergify_stream.main import create_app as create_stream

PROBLEM = "application/problem+json"
SONG = {
    "track_id": "70kFiCsoYnJxMgIZ82WQmj",
    "name": "A song",
    "artists": ["Someone"],
    **dict.fromkeys(
        [
            "danceability",
            "energy",
            "speechiness",
            "acousticness",
            "instrumentalness",
            "liveness",
            "valence",
        ],
        0.5,
    ),
    "loudness": -5.0,
    "tempo": 120.0,
}


def _ingest(tmp: Path, **overrides: Any) -> Any:
    return create_ingest(
        IngestSettings(
            _env_file=None,  # type: ignore[call-arg]
            lake_uri=str(tmp / "lake"),
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            **overrides,
        )
    )


def _stream(tmp: Path, **overrides: Any) -> Any:
    settings = StreamSettings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=f"sqlite:///{tmp / 'stream.db'}",
        kafka_bootstrap_servers="127.0.0.1:1",
        **overrides,
    )
    return create_stream(settings, start_stream=False)


def _recommender(tmp: Path, **overrides: Any) -> Any:
    url = f"sqlite:///{tmp / 'catalog.db'}"
    engine = make_engine(url)
    create_tables(engine)
    engine.dispose()
    return create_recommender(
        RecommenderSettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=url,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            stream_processor_url=f"http://127.0.0.1:{free_port()}",
            refresh_interval_seconds=3600.0,
            **overrides,
        )
    )


def _spotify(tmp: Path, **overrides: Any) -> Any:
    return create_spotify(
        SpotifySettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{tmp / 'spotify.db'}",
            spotify_sandbox=False,
            **overrides,
        )
    )


# service -> (app factory, a request that does something, and a read that must work with the
# credential). The first of each is the kind of call a web page could make with a no-cors post.
SERVICES: dict[str, tuple[Callable[..., Any], tuple[str, str, dict[str, Any]], str]] = {
    "ingest": (_ingest, ("POST", "/api/v1/songs", {"json": [SONG]}), "/openapi.json"),
    "stream-processor": (_stream, ("POST", "/admin/retrain", {}), "/admin/status"),
    "recommender": (
        _recommender,
        ("POST", "/api/v1/recommendations", {"json": {"seeds": [SONG["track_id"]]}}),
        "/api/v1/catalog",
    ),
    "spotify-gateway": (_spotify, ("GET", "/api/v1/spotify/login", {}), "/health"),
}


@pytest.fixture(params=list(SERVICES))
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(service name, base URL) of the real service app on real HTTP."""
    with serving() as serve:
        factory = SERVICES[request.param][0]
        yield request.param, serve(factory(tmp_path)).url


def _assert_problem(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    assert words in response.json()["detail"]


def test_a_direct_call_without_the_internal_credential_is_401(served: tuple[str, str]) -> None:
    name, url = served
    method, path, body = SERVICES[name][1]
    anonymous = httpx.request(method, url + path, timeout=10, **body)
    _assert_problem(anonymous, 401, "call it through the API gateway")
    assert anonymous.json()["instance"] == path
    wrong = httpx.request(
        method, url + path, timeout=10, headers={INTERNAL_TOKEN_HEADER: "x" * 40}, **body
    )
    _assert_problem(wrong, 401, "EMERGIFY_INTERNAL_TOKEN")
    # What a web page can send cross-origin without a preflight: a text/plain form post.
    form = httpx.post(url + path, content=b"a=b", headers={"content-type": "text/plain"})
    assert form.status_code == 401
    # Every path is closed, the documents and the health details included; only liveness
    # answers, with nothing in it.
    for closed in ("/openapi.json", "/health", "/docs"):
        assert httpx.get(url + closed, timeout=10).status_code == 401, closed
    live = httpx.get(url + "/livez", timeout=10)
    assert live.status_code == 200 and live.json() == {"status": "up"}


def test_with_the_internal_credential_the_service_answers(served: tuple[str, str]) -> None:
    name, url = served
    read = SERVICES[name][2]
    assert httpx.get(url + read, headers=INTERNAL_HEADERS, timeout=10).status_code == 200


def test_a_host_name_not_configured_is_refused_before_the_credential(
    served: tuple[str, str],
) -> None:
    _name, url = served
    port = url.rsplit(":", 1)[1]
    for host in (f"rebind.attacker.example:{port}", "rebind.attacker.example"):
        response = httpx.get(
            url + "/health", headers={**INTERNAL_HEADERS, "Host": host}, timeout=10
        )
        _assert_problem(response, 421, "does not answer to the host name")
    # The loopback names and the service's own URL host are always accepted.
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        response = httpx.get(url + "/livez", headers={"Host": host}, timeout=10)
        assert response.status_code == 200, host


def test_extra_host_names_come_from_a_setting(tmp_path: Path) -> None:
    with serving() as serve:
        url = serve(_recommender(tmp_path, allowed_hosts="recs.internal")).url
        ok = httpx.get(url + "/livez", headers={"Host": "recs.internal:8003"}, timeout=10)
        assert ok.status_code == 200
        refused = httpx.get(url + "/livez", headers={"Host": "other.internal"}, timeout=10)
        assert refused.status_code == 421


def test_the_gateway_refuses_a_foreign_host_and_sends_the_credential_upstream(
    tmp_path: Path,
) -> None:
    with serving() as serve:
        recommender = serve(_recommender(tmp_path))
        gateway = serve(
            create_gateway(
                GatewaySettings(
                    _env_file=None,  # type: ignore[call-arg]
                    recommender_url=recommender.url,
                    admin_api_key="gateway-admin-key-0123456789abcdef",
                    api_keys_file=tmp_path / "keys.json",
                    rate_limit_per_minute=0,
                )
            )
        )
        key = {"X-API-Key": "gateway-admin-key-0123456789abcdef"}
        port = gateway.url.rsplit(":", 1)[1]
        refused = httpx.get(
            gateway.url + "/api/v1/catalog",
            headers={**key, "Host": f"rebind.attacker.example:{port}"},
            timeout=10,
        )
        _assert_problem(refused, 421, "does not answer to the host name")
        # Through the gateway the recommender answers: the gateway sent the credential. A
        # caller's own (wrong) credential is dropped, not forwarded.
        through = httpx.get(
            gateway.url + "/api/v1/catalog",
            headers={**key, INTERNAL_TOKEN_HEADER: "not-the-token"},
            timeout=10,
        )
        assert through.status_code == 200, through.text


@pytest.mark.parametrize("token", ["", "generated-on-first-run", "too-short"])
def test_an_internal_service_refuses_to_start_without_a_usable_token(
    tmp_path: Path, token: str
) -> None:
    with pytest.raises(InternalAuthNotConfiguredError, match="EMERGIFY_INTERNAL_TOKEN"):
        _recommender(tmp_path, internal_token=token)
    # Nor does the gateway start without it: every upstream would refuse it.
    with pytest.raises(AuthNotConfiguredError, match="EMERGIFY_INTERNAL_TOKEN"):
        create_gateway(
            GatewaySettings(
                _env_file=None,  # type: ignore[call-arg]
                admin_api_key="gateway-admin-key-0123456789abcdef",
                internal_token=token,
            )
        )


def test_python_dash_m_refuses_to_start_without_the_token_and_guards_with_it(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "EMERGIFY_INTERNAL_TOKEN"}
    env |= {
        "EMERGIFY_DATABASE_URL": f"sqlite:///{tmp_path / 'catalog.db'}",
        "EMERGIFY_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "EMERGIFY_ALLOWED_HOSTS": "",
    }
    refused = subprocess.run(
        [sys.executable, "-m", "emergify_recommender"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode != 0
    assert "recommender refuses to start: EMERGIFY_INTERNAL_TOKEN is not set" in refused.stderr

    port = free_port()
    env |= {
        "EMERGIFY_INTERNAL_TOKEN": INTERNAL_TOKEN,
        "EMERGIFY_RECOMMENDER_URL": f"http://127.0.0.1:{port}",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "emergify_recommender"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"

        def live() -> bool:
            try:
                return httpx.get(url + "/livez", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(live, 120, "the recommender process to answer")
        assert httpx.get(url + "/api/v1/catalog", timeout=5).status_code == 401
        assert httpx.get(url + "/health", headers=INTERNAL_HEADERS, timeout=5).status_code == 200
        # In-process test clients' names (testserver) are not allowed here: only the defaults.
        foreign = httpx.get(url + "/livez", headers={"Host": "testserver"}, timeout=5)
        assert foreign.status_code == 421
    finally:
        proc.terminate()
        proc.wait(30)
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
        assert INTERNAL_TOKEN not in log
