"""The listener's Spotify session: the ``emergify_session`` cookie the spotify-gateway set.

The gateway and the dashboard share the host (127.0.0.1), so the browser sends the cookie to
the dashboard too; Streamlit exposes it through ``st.context.cookies`` (read server-side from
the browser's request, so HttpOnly does not hide it). The dashboard only forwards it.
"""

from __future__ import annotations

import streamlit as st

from emergify_contracts.session import SESSION_COOKIE
from emergify_dashboard import state


def session_cookie() -> str | None:
    """The listener's session cookie, or None when nobody signed in."""
    try:
        value = st.context.cookies.get(SESSION_COOKIE)
    except Exception:  # no browser context (bare script run): nobody signed in
        value = None
    if not (isinstance(value, str) and value):
        value = st.session_state.get(state.SESSION_COOKIE_OVERRIDE)
    if not (isinstance(value, str) and value):
        return None
    return None if value == st.session_state.get(state.SIGNED_OUT_COOKIE) else value
