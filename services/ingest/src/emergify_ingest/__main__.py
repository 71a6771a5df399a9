"""``python -m emergify_ingest``: run the ingest service with uvicorn."""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import uvicorn

from emergify_contracts.internal_auth import InternalAuthNotConfiguredError
from emergify_contracts.logs import configure_logging
from emergify_ingest.config import get_settings
from emergify_ingest.main import create_app


def main() -> None:
    """Configure logging and serve on the host and port of ``EMERGIFY_INGEST_URL``."""
    settings = get_settings()
    configure_logging("ingest", settings.log_level, settings.log_format)
    try:
        app = create_app(settings)
    except (ValueError, InternalAuthNotConfiguredError) as exc:
        sys.exit(f"ingest cannot start: {exc}")
    url = urlparse(settings.ingest_url)
    uvicorn.run(app, host=url.hostname or "127.0.0.1", port=url.port or 8001, log_config=None)


if __name__ == "__main__":
    main()
