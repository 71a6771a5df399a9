"""Structured logging, configured the same way in every service, with secrets redacted."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping
from typing import Any

import structlog

REDACTED = "[redacted]"
# Field names whose values are secrets, compared lower-case with "-" read as "_".
SECRET_FIELDS = frozenset(
    {
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "x_api_key",
        "api_key",
        "api_keys",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "secret",
        "password",
        "client_secret",
        "code_verifier",
    }
)
# ... and names ending like these (admin_api_key, session_secret, db_password, ...).
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_api_key", "_api_keys")
# Secrets inside free text: bearer/basic credentials, Emergify API keys (the id is kept, it
# names the key without being one) and secret form/query parameters.
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+"), rf"\1 {REDACTED}"),
    (re.compile(r"\b(emk_[0-9a-f]+_)[A-Za-z0-9_\-]+"), rf"\g<1>{REDACTED}"),
    # Form and query parameters: access_token=...&refresh_token=...
    (
        re.compile(
            r"(?i)\b(access_token|refresh_token|id_token|client_secret|code_verifier|password"
            r"|api_key)=[^&\s\"']+"
        ),
        rf"\1={REDACTED}",
    ),
    # OAuth's authorization code and state in a query string (uvicorn's access line of the
    # sign-in callback): a code is a credential until it is exchanged.
    (re.compile(r"(?i)([?&](?:code|state))=[^&\s\"']+"), rf"\1={REDACTED}"),
)


def is_secret_field(name: str) -> bool:
    """Whether a field called ``name`` holds a secret (``Authorization``, ``refresh_token``)."""
    key = name.strip().lower().replace("-", "_")
    return key in SECRET_FIELDS or key.endswith(_SECRET_SUFFIXES)


def redact(value: Any) -> Any:
    """``value`` with secrets replaced: by field name in mappings (nested too), and bearer
    tokens and ``emk_`` keys inside strings."""
    if isinstance(value, str):
        for pattern, replacement in _SECRET_PATTERNS:
            value = pattern.sub(replacement, value)
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and is_secret_field(k) else redact(v))
            for k, v in value.items()
        }
    if type(value) in (list, tuple):  # not namedtuples: they cannot be rebuilt this way
        # Header lists: [("authorization", "Bearer ..."), ...]
        if (
            isinstance(value, tuple)
            and len(value) == 2
            and isinstance(value[0], str | bytes)
            and is_secret_field(
                value[0].decode("latin-1") if isinstance(value[0], bytes) else value[0]
            )
        ):
            return (value[0], REDACTED)
        return type(value)(redact(v) for v in value)
    return value


def redact_secrets(_logger: object, _name: str, event: dict) -> dict:
    """structlog processor: redact every field of the event (see :func:`redact`)."""
    return redact(event)


def configure_logging(service: str, level: str = "INFO", fmt: str = "console") -> None:
    """Route stdlib and structlog records through one renderer, tagged with ``service``."""
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )

    # The JSON renderer writes ``exc_info`` as ``true`` unless the traceback is made text
    # first; the text is redacted again (an exception message can quote a secret). The
    # console renderer formats exceptions itself.
    tail: list[structlog.types.Processor] = (
        [structlog.processors.format_exc_info, redact_secrets] if fmt == "json" else []
    )

    def add_service(_logger: object, _name: str, event: dict) -> dict:
        event.setdefault("service", service)
        return event

    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_service,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Last, so nothing added above escapes it; stdlib records pass through it too.
        redact_secrets,
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                *tail,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "py4j", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    # kafka-python 3 warns about every slow event-loop task while Spark keeps the CPU busy.
    logging.getLogger("kafka").setLevel(max(logging.ERROR, root.level))
