"""Secrets never reach the log: what a configured logger really writes, redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest
import structlog

from emergify_contracts.logs import REDACTED, configure_logging, is_secret_field, redact

EMK = "emk_3f9a2b1c4d5e_Qm9vLWJhei1zZWNyZXQtcGFydC1vZi10aGUta2V5LTEyMw"
BEARER = "ya29.a0AfH6SMBx-very_secret.token"


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict]]]:
    """Configure logging as a service does (JSON); yield a reader of the lines it wrote."""
    saved_config = structlog.get_config()
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    configure_logging("redaction-test", "INFO", "json")
    # The service's own handler and formatter, writing to a buffer instead of stderr (which
    # pytest swaps between test phases).
    written = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(written)

    def lines() -> list[dict]:
        return [json.loads(line) for line in written.getvalue().splitlines()]

    try:
        yield lines
    finally:
        structlog.configure(**saved_config)
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_secret_fields_are_redacted_nested_and_case_insensitive(json_logs) -> None:
    log = structlog.get_logger("emergify.test")
    log.info(
        "upstream call",
        headers={"Authorization": f"Bearer {BEARER}", "X-API-Key": EMK, "Accept": "json"},
        response={
            "body": {"access_token": "at-123", "Refresh-Token": "rt-456", "expires_in": 3600}
        },
        cookie="emergify_session=abc.def",
        Set_Cookie="oauth_state=s1",
        password="hunter2",
        CLIENT_SECRET="cs-789",
        code_verifier="v" * 43,
        session_secret="ss-000",
        raw_headers=[("authorization", "Basic dXNlcjpwYXNz"), ("content-type", "text/csv")],
        key_id="3f9a2b1c4d5e",
        tokens=3,
    )
    [line] = [entry for entry in json_logs() if entry["event"] == "upstream call"]
    text = json.dumps(line)
    for secret in (BEARER, EMK, "at-123", "rt-456", "abc.def", "s1", "hunter2", "cs-789",
                   "v" * 43, "ss-000", "dXNlcjpwYXNz"):  # fmt: skip
        assert secret not in text, secret
    assert line["headers"] == {"Authorization": REDACTED, "X-API-Key": REDACTED, "Accept": "json"}
    assert line["response"]["body"]["expires_in"] == 3600
    assert line["raw_headers"] == [["authorization", REDACTED], ["content-type", "text/csv"]]
    # What is not a secret stays readable.
    assert line["key_id"] == "3f9a2b1c4d5e" and line["tokens"] == 3
    assert line["service"] == "redaction-test" and line["level"] == "info"


def test_secrets_inside_text_are_masked(json_logs) -> None:
    log = structlog.get_logger("emergify.test")
    log.warning(f"refused Authorization: Bearer {BEARER} for {EMK}", error=f"bad key {EMK}")
    # stdlib loggers (uvicorn, httpx, libraries) go through the same processors.
    logging.getLogger("some.library").warning(
        "POST /api/token body=grant_type=refresh_token&refresh_token=rt-999&client_secret=cs-1"
    )
    lines = json_logs()
    text = json.dumps(lines)
    for secret in (BEARER, "Qm9vLWJhei1zZWNyZXQt", "rt-999", "cs-1"):
        assert secret not in text, secret
    first, second = lines
    assert first["event"] == (
        f"refused Authorization: Bearer {REDACTED} for emk_3f9a2b1c4d5e_{REDACTED}"
    )
    assert first["error"] == f"bad key emk_3f9a2b1c4d5e_{REDACTED}"
    assert second["logger"] == "some.library"
    assert f"refresh_token={REDACTED}&client_secret={REDACTED}" in second["event"]
    assert "grant_type=refresh_token" in second["event"]  # a value, not a secret


def test_field_names() -> None:
    for name in ("authorization", "Set-Cookie", "x-api-key", "ADMIN_API_KEY", "id_token",
                 "token_encryption_secret", "db_password"):  # fmt: skip
        assert is_secret_field(name), name
    for name in ("key_id", "tokens", "token_count", "path", "status", "max_upload_bytes"):
        assert not is_secret_field(name), name
    assert redact(("a", "b", "c")) == ("a", "b", "c")
    assert redact({"nested": [{"token": "t"}]}) == {"nested": [{"token": REDACTED}]}


def test_an_exception_is_written_as_its_traceback_and_redacted(json_logs) -> None:
    log = structlog.get_logger("emergify.test")
    try:
        raise ValueError(f"broker refused the record (key {EMK})")
    except ValueError:
        log.exception("could not publish", table_version=7)
    [line] = [entry for entry in json_logs() if entry["event"] == "could not publish"]
    assert "exc_info" not in line
    assert "Traceback" in line["exception"]
    assert "ValueError: broker refused the record" in line["exception"]
    assert EMK not in json.dumps(line)
    assert line["table_version"] == 7
