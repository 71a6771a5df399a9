"""Schemathesis against the services' OpenAPI documents, in-process over ASGI: shared parts.

Each app is loaded with ``schemathesis.openapi.from_asgi``; schemathesis runs its lifespan
on its own event loop (so the app's Kafka client lives there too) and calls it without a
socket. Runs are derandomized and small (``FUZZ_EXAMPLES`` per operation) so CI is
reproducible and quick.
"""

from __future__ import annotations

import time
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi as schemathesis_asgi
from schemathesis.specs.openapi.checks import response_schema_conformance

#: Examples per operation: enough to find 5xx on malformed input, small enough for CI.
FUZZ_EXAMPLES = 20


@schemathesis.check
def no_undocumented_server_error(ctx: Any, response: Any, case: Any) -> bool | None:
    """``not_a_server_error``, except a 503 the operation documents (starting, broker down)."""
    documented = case.operation.definition.raw.get("responses", {})
    if response.status_code == 503 and "503" in documented:
        return None
    return not_a_server_error(ctx, response, case)  # type: ignore[no-any-return]


#: The checks every operation must pass: no 5xx but a documented 503, and every response
#: matches its schema.
CHECKS = [no_undocumented_server_error, response_schema_conformance]

fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def wait_healthy(app: Any, path: str = "/health", deadline_s: float = 60.0) -> None:
    """Start ``app``'s lifespan on schemathesis's loop and poll ``path`` until it answers 200."""
    with schemathesis_asgi.get_client(app) as client:
        deadline = time.monotonic() + deadline_s
        while (response := client.get(path)).status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError(f"{path} never became ready: {response.text}")
            time.sleep(0.1)


def fuzz_operations(schema: Any, skip: frozenset[str] = frozenset()) -> list[str]:
    """Fuzz every operation of ``schema`` (but the labels in ``skip``); the labels fuzzed.

    Each operation gets its own Hypothesis run; failures of all operations are collected and
    raised together, so one run shows every problem.
    """
    fuzzed: list[str] = []
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue

        @fuzz_settings
        @given(case=operation.as_strategy())
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            run()
        except Exception as exc:  # every operation is fuzzed before the test fails
            failures.append(f"{operation.label}: {exc}")
        fuzzed.append(operation.label)
    assert not failures, "\n\n".join(failures)
    return fuzzed


def stop_lifespans() -> None:
    """Run the shutdown of every app schemathesis started."""
    schemathesis_asgi.shutdown_lifespans()


__all__ = [
    "CHECKS",
    "fuzz_operations",
    "fuzz_settings",
    "schemathesis",
    "stop_lifespans",
    "wait_healthy",
]
