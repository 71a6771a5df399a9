"""``python -m emergify_recommender``: configure logging and serve on ``recommender_url``."""

from __future__ import annotations

import sys
from urllib.parse import urlsplit

import uvicorn

from emergify_contracts.internal_auth import InternalAuthNotConfiguredError
from emergify_contracts.logs import configure_logging
from emergify_recommender.config import get_settings
from emergify_recommender.main import create_app


def main() -> None:
    """Run the recommender with uvicorn on the port of ``EMERGIFY_RECOMMENDER_URL``, listening
    on ``EMERGIFY_BIND_HOST`` when set (containers: 0.0.0.0), else on the URL's host."""
    settings = get_settings()
    configure_logging("recommender", settings.log_level, settings.log_format)
    url = urlsplit(settings.recommender_url)
    try:
        app = create_app(settings)
    except InternalAuthNotConfiguredError as exc:
        sys.exit(f"recommender refuses to start: {exc}")
    uvicorn.run(
        app,
        host=settings.bind_host or url.hostname or "127.0.0.1",
        port=url.port or 8003,
        log_config=None,  # keep our structlog handler
        access_log=False,
    )


if __name__ == "__main__":
    main()
