"""The dashboard page: sign-in, favourites, controls, results, save, and the catalog panel.

``main()`` is what ``app.py`` (the script ``streamlit run`` executes) calls on every rerun.
"""

from __future__ import annotations

import secrets

import streamlit as st
import structlog

from emergify_dashboard import state
from emergify_dashboard.config import Settings
from emergify_dashboard.gateway_client import GatewayClient
from emergify_dashboard.listener_session import session_cookie
from emergify_dashboard.views.catalog import render_catalog
from emergify_dashboard.views.expand import render_expand
from emergify_dashboard.views.favourites import render_favourites
from emergify_dashboard.views.listener import render_listener
from emergify_dashboard.views.living import render_living
from emergify_dashboard.views.privacy import render_privacy
from emergify_dashboard.views.recommendations import (
    render_controls,
    render_results,
    render_save,
    request_for_me,
    request_recommendations,
)


def viewer_id() -> str:
    """A random id for this browser session, kept across reruns: the gateway's rate-limit
    bucket for this viewer (so viewers never share the dashboard's one bucket)."""
    if state.VIEWER not in st.session_state:
        st.session_state[state.VIEWER] = secrets.token_urlsafe(18)
    return st.session_state[state.VIEWER]


def make_client(settings: Settings) -> GatewayClient:
    """A gateway client with the dashboard's key, this viewer's id and Spotify session."""
    return GatewayClient(
        settings.gateway_url,
        settings.gateway_key(),
        session_cookie=session_cookie(),
        timeout=settings.dashboard_timeout_seconds,
        upload_timeout=settings.dashboard_upload_timeout_seconds,
        public_url=settings.dashboard_public_gateway_url,
        viewer_id=viewer_id(),
    )


def render(settings: Settings) -> None:
    """Draw the whole page once (Streamlit reruns it on every interaction)."""
    st.title("Emergify")
    st.caption("Playlists of emerging artists that sound like the songs you love.")
    with make_client(settings) as client:
        signed_in = render_listener(client)
        discover, living, kept, catalog = st.tabs(
            ["Discover", "Living playlists", "What Emergify keeps", "Catalog"]
        )
        with discover:
            favourites = render_favourites(client, signed_in)
            controls = render_controls(settings)
            favourites_col, taste_col = st.columns(2)
            if favourites_col.button(
                "Get recommendations",
                key="recommend",
                type="primary",
                disabled=not favourites,
                icon=":material/auto_awesome:",
            ):
                request_recommendations(client, favourites, controls)
            if signed_in:
                include_recent = taste_col.checkbox(
                    "Include songs recommended to me lately", key="include_recent"
                )
                if taste_col.button(
                    "Recommend for me", key="recommend_for_me", icon=":material/person:"
                ):
                    request_for_me(client, controls, include_recent)
                render_expand(client, controls)
            results = render_results(client, settings, signed_in)
            if results:
                render_save(client, signed_in, favourites, results)
        with living:
            render_living(client, signed_in, favourites, controls)
        with kept:
            render_privacy(client, signed_in)
        with catalog:
            render_catalog(client, settings, signed_in)


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
