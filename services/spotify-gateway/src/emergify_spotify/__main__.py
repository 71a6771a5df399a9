"""``python -m emergify_spotify``: run the spotify-gateway with uvicorn."""

from __future__ import annotations

import sys
from urllib.parse import urlparse

import uvicorn

from emergify_contracts.internal_auth import InternalAuthNotConfiguredError
from emergify_contracts.logs import configure_logging
from emergify_spotify.config import get_settings
from emergify_spotify.main import create_app


def main() -> None:
    settings = get_settings()
    configure_logging("spotify-gateway", settings.log_level, settings.log_format)
    url = urlparse(settings.spotify_gateway_url)
    try:
        app = create_app(settings)
    except InternalAuthNotConfiguredError as exc:
        sys.exit(f"spotify-gateway refuses to start: {exc}")
    uvicorn.run(
        app,
        host=settings.bind_host or url.hostname or "127.0.0.1",
        port=url.port or 8004,
        log_config=None,
    )


if __name__ == "__main__":
    main()
