"""``python -m emergify_stream``: the admin app with the Spark driver inside."""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import uvicorn

from emergify_contracts.internal_auth import InternalAuthNotConfiguredError
from emergify_contracts.logs import configure_logging
from emergify_stream.config import get_settings
from emergify_stream.main import create_app


def main() -> None:
    """Configure logging and serve on the host and port of ``stream_processor_url``."""
    settings = get_settings()
    configure_logging("stream-processor", settings.log_level, settings.log_format)
    url = urlparse(settings.stream_processor_url)
    try:
        app = create_app(settings)
    except InternalAuthNotConfiguredError as exc:
        sys.exit(f"stream-processor refuses to start: {exc}")
    uvicorn.run(
        app,
        host=url.hostname or "127.0.0.1",
        port=url.port or 8002,
        log_config=None,
        timeout_graceful_shutdown=30,
    )


if __name__ == "__main__":
    main()
