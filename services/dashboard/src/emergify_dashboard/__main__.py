"""``python -m emergify_dashboard``: ``streamlit run`` the dashboard on the host and port of
``EMERGIFY_DASHBOARD_URL`` (listening on ``EMERGIFY_BIND_HOST`` when set)."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from streamlit.web import cli as streamlit_cli

from emergify_contracts.logs import configure_logging
from emergify_dashboard.config import get_settings

APP = Path(__file__).with_name("app.py")


def streamlit_argv() -> list[str]:
    """The ``streamlit run`` command line for the current settings."""
    settings = get_settings()
    url = httpx.URL(settings.dashboard_url)
    return [
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        settings.bind_host or url.host or "127.0.0.1",
        "--server.port",
        str(url.port or 8501),
        "--server.headless",
        "true",
        "--browser.gatherUsageStats",
        "false",
        "--client.showErrorDetails",
        "none",  # never a traceback in the browser; the page logs it
        "--client.toolbarMode",
        "minimal",
        "--server.fileWatcherType",
        "none",
        "--server.maxUploadSize",
        str(settings.dashboard_max_upload_mb),
        "--logger.level",
        settings.log_level.lower(),
    ]


def main() -> None:
    """Run Streamlit in this process (so a SIGTERM to it stops the dashboard)."""
    settings = get_settings()
    configure_logging("dashboard", settings.log_level, settings.log_format)
    sys.argv = streamlit_argv()
    sys.exit(streamlit_cli.main())


if __name__ == "__main__":
    main()
