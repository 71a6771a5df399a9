"""``python -m emergify_spotify.sandbox``: serve the Spotify sandbox on its URL setting."""

from __future__ import annotations

from urllib.parse import urlparse

import uvicorn

from emergify_contracts.logs import configure_logging
from emergify_spotify.sandbox.app import create_app
from emergify_spotify.sandbox.config import SandboxSettings


def main() -> None:
    """Serve the sandbox on the port of ``EMERGIFY_SPOTIFY_SANDBOX_URL``."""
    settings = SandboxSettings()
    configure_logging("spotify-sandbox", settings.log_level, settings.log_format)
    url = urlparse(settings.spotify_sandbox_url)
    uvicorn.run(
        create_app(settings),
        host=settings.bind_host or url.hostname or "127.0.0.1",
        port=url.port or 8090,
        log_config=None,
    )


if __name__ == "__main__":
    main()
