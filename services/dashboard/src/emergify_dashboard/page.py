"""The dashboard page: sign-in, favourites, controls, results, save, and the catalog panel.

``main()`` is what ``app.py`` (the script ``streamlit run`` executes) calls on every rerun.
"""

from __future__ import annotations

import streamlit as st
import structlog

from emergify_dashboard.config import Settings
from emergify_dashboard.gateway_client import GatewayClient
from emergify_dashboard.listener_session import session_cookie
from emergify_dashboard.views.catalog import render_catalog
from emergify_dashboard.views.favourites import render_favourites
from emergify_dashboard.views.listener import render_listener
from emergify_dashboard.views.recommendations import (
    render_controls,
    render_results,
    render_save,
    request_recommendations,
)


def make_client(settings: Settings) -> GatewayClient:
    """A gateway client with the dashboard's key and this browser's Spotify session."""
    return GatewayClient(
        settings.gateway_url,
        settings.gateway_key(),
        session_cookie=session_cookie(),
        timeout=settings.dashboard_timeout_seconds,
        upload_timeout=settings.dashboard_upload_timeout_seconds,
        public_url=settings.dashboard_public_gateway_url,
    )


def render(settings: Settings) -> None:
    """Draw the whole page once (Streamlit reruns it on every interaction)."""
    st.title("Emergify")
    st.caption("Playlists of emerging artists that sound like the songs you love.")
    with make_client(settings) as client:
        signed_in = render_listener(client)
        discover, catalog = st.tabs(["Discover", "Catalog"])
        with discover:
            favourites = render_favourites(client, signed_in)
            controls = render_controls(settings)
            if st.button(
                "Get recommendations",
                key="recommend",
                type="primary",
                disabled=not favourites,
                icon=":material/auto_awesome:",
            ):
                request_recommendations(client, favourites, controls)
            results = render_results(client, settings)
            if results:
                render_save(client, signed_in, favourites, results)
        with catalog:
            render_catalog(client, settings)


def main() -> None:
    """Entry point of the Streamlit script."""
    st.set_page_config(page_title="Emergify", page_icon="🎧", layout="wide")
    try:
        # Settings are read per rerun (cheap) so a changed .env needs no restart.
        render(Settings())
    except Exception as exc:  # a listener sees a sentence, the log gets the traceback
        structlog.get_logger().exception("dashboard page failed")
        st.error(
            f"Something went wrong on this page ({type(exc).__name__}: {exc}). "
            "Reload to try again; if it keeps happening, the dashboard's log has the details."
        )
