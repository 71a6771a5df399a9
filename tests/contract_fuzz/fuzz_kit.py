"""Schemathesis against the services' OpenAPI documents, in-process over ASGI: shared parts.

Each app is loaded with ``schemathesis.openapi.from_asgi``; schemathesis runs its lifespan
on its own event loop (so the app's Kafka client lives there too) and calls it without a
socket. Runs are derandomized and small (``FUZZ_EXAMPLES`` per operation and mode) so CI is
reproducible and quick. The builders at the end make the apps several modules fuzz (the
recommender over the sample catalog, the spotify-gateway in front of the sandbox).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import schemathesis
from catalog_fixtures import (
    SAMPLE_CSV,
    feature_matrix,
    fit_portable_model,
    insert_model,
    read_sample_songs,
    seed_catalog,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from testkit import wait_for

from emergify_cli.broker import free_port
from emergify_contracts.tables import make_engine
from emergify_recommender.config import Settings as RecommenderSettings
from emergify_recommender.main import create_app as create_recommender
from emergify_spotify.config import Settings as SpotifySettings
from emergify_spotify.main import create_app as create_spotify
from emergify_spotify.sandbox.config import SandboxSettings

FERNET_KEY = "x1UoVTPeF2t0CSFz0gK3bcLSmzyq1Fa3cRVQzG5-8eg="
SESSION_SECRET = "fuzz-session-secret-0123456789abcdef0123"

#: Examples per operation and mode: enough to find 5xx on malformed input, small enough for CI.
FUZZ_EXAMPLES = 20

#: Valid requests (reach the handlers) and invalid ones (wrong types, missing fields, values
#: out of range: must be a 4xx, never a 5xx).
GENERATION_MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)


@schemathesis.check
def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, except a 503 the operation documents (starting, broker down)."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code == 503 and "503" in documented:
        return None
    return not_a_server_error(ctx, response, case)  # type: ignore[no-any-return]


#: What every Emergify service must pass: no 5xx but a documented 503; every status, content
#: type, header and body as documented; invalid requests refused (4xx); operations that need
#: a key answer 401 without it.
CHECKS = (
    no_undocumented_server_error,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,
)

#: For the Spotify sandbox, a stand-in following Spotify's documented contract: its OpenAPI
#: document lists what it serves, not Spotify's error answers (400, 403, 404, 429).
STAND_IN_CHECKS = (no_undocumented_server_error, response_schema_conformance)

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def wait_healthy(
    app: Any,
    path: str = "/health",
    deadline_s: float = 60.0,
    ready: Callable[[Any], bool] = lambda response: response.status_code == 200,
    headers: dict[str, str] | None = None,
) -> None:
    """Start ``app``'s lifespan on schemathesis's loop and poll ``path`` (with ``headers``)
    until ``ready`` (by default: it answers 200)."""
    with schemathesis_asgi.get_client(app) as client:
        wait_for(
            lambda: ready(client.get(path, headers=headers)), deadline_s, f"{path} to be ready"
        )


def takes_input(operation: Any) -> bool:
    """Whether the operation has parameters or a body (else no request of it is invalid)."""
    parts = (operation.path_parameters, operation.query, operation.headers, operation.cookies)
    return any(len(part) for part in parts) or bool(operation.body)


def _checker(
    statuses: Counter[int], headers: dict[str, str] | None, checks: tuple[Any, ...]
) -> Callable[[Any], None]:
    """Call a case, count its status in ``statuses`` and run ``checks`` on the response."""

    def check(case: Any) -> None:
        response = case.call(headers=headers)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=list(checks), headers=headers)

    return check


def fuzz_operations(
    schema: Any,
    skip: frozenset[str] = frozenset(),
    headers: dict[str, str] | None = None,
    checks: tuple[Any, ...] = CHECKS,
) -> dict[str, Counter[int]]:
    """Fuzz every operation of ``schema`` (but the labels in ``skip``), sending ``headers``
    too (e.g. an API key), and run ``checks`` on every response; the status codes each label
    answered, so a test can check the fuzz reached past validation (a 2xx was seen).

    Each operation gets a Hypothesis run per generation mode, plus one over its documented
    examples; failures of all operations are collected and raised together, so one run shows
    every problem.
    """
    fuzzed: dict[str, Counter[int]] = {}
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue
        statuses: Counter[int] = Counter()
        check = _checker(statuses, headers, checks)
        runs = {
            f"{mode.value} cases": operation.as_strategy(generation_mode=mode)
            for mode in (GENERATION_MODES if takes_input(operation) else GENERATION_MODES[:1])
        }
        if examples := operation.get_strategies_from_examples():
            # The documented examples (e.g. a track id of the catalog) reach past the 404s
            # that random valid ids get.
            runs["documented examples"] = st.one_of(examples)
        for name, strategy in runs.items():
            try:
                fuzz_settings(given(case=strategy)(check))()
            except Unsatisfiable:
                # Only a free-form string path parameter: no request of it is invalid.
                if name != f"{GenerationMode.NEGATIVE.value} cases":
                    failures.append(f"{operation.label} ({name}): no case could be generated")
            # FailureGroup (what the checks raise) is a BaseExceptionGroup, not an Exception.
            except (Exception, FailureGroup) as exc:  # every operation is fuzzed first
                failures.append(f"{operation.label} ({name}): {exc}")
        fuzzed[operation.label] = statuses
    assert not failures, "\n\n".join(failures)
    return fuzzed


def stop_lifespans() -> None:
    """Run the shutdown of every app schemathesis started."""
    schemathesis_asgi.shutdown_lifespans()


# --- apps over real parts -----------------------------------------------------------------


def seed_trained_catalog(url: str) -> None:
    """The sample CSV's songs in the feature table at ``url`` and a model fitted on them (k=8),
    stored as the stream processor and the batch layer store them."""
    seed_catalog(url)
    model = fit_portable_model(feature_matrix(read_sample_songs()), k=8, version=1)
    engine = make_engine(url)
    insert_model(engine, model)
    engine.dispose()


def recommender_app(database_url: str) -> Any:
    """The recommender over ``database_url``, without broker (its fallback poll suffices) or
    stream processor (the catalog's lag is null)."""
    return create_recommender(
        RecommenderSettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=database_url,
            kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
            stream_processor_url=f"http://127.0.0.1:{free_port()}",
            refresh_interval_seconds=3600.0,
            speed_layer_timeout_seconds=0.2,
        )
    )


def sandbox_settings(sandbox_url: str, callback: str) -> SandboxSettings:
    """The Spotify sandbox at ``sandbox_url``: consent approved at once, the sample catalog,
    ``callback`` the one registered redirect URI."""
    return SandboxSettings(
        _env_file=None,  # type: ignore[call-arg]
        spotify_sandbox_url=sandbox_url,
        spotify_sandbox_redirect_uris=[callback],
        spotify_sandbox_auto_approve=True,
        spotify_sandbox_catalog_csv=str(SAMPLE_CSV),
    )


def spotify_app(folder: Path, sandbox: SandboxSettings, recommender_url: str) -> Any:
    """The spotify-gateway signing in with the sandbox, its tokens in SQLite under ``folder``."""
    return create_spotify(
        SpotifySettings(
            _env_file=None,  # type: ignore[call-arg]
            database_url=f"sqlite:///{folder / 'spotify.db'}",
            spotify_client_id=sandbox.spotify_sandbox_client_id,
            spotify_client_secret=sandbox.spotify_sandbox_client_secret,
            spotify_redirect_uri=sandbox.spotify_sandbox_redirect_uris[0],
            spotify_accounts_url=sandbox.spotify_sandbox_url,
            spotify_api_url=f"{sandbox.spotify_sandbox_url}/v1",
            session_secret=SESSION_SECRET,
            token_encryption_key=FERNET_KEY,
            recommender_url=recommender_url,
            max_retry_after_seconds=1,
        )
    )


__all__ = [
    "CHECKS",
    "STAND_IN_CHECKS",
    "fuzz_operations",
    "fuzz_settings",
    "recommender_app",
    "sandbox_settings",
    "schemathesis",
    "seed_trained_catalog",
    "spotify_app",
    "stop_lifespans",
    "wait_healthy",
]
