"""Expand one of the listener's Spotify playlists: a fixed count, or every song within a
distance."""

from __future__ import annotations

from typing import Any

import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text
from emergify_dashboard.views.recommendations import Controls, keep_results
from emergify_dashboard.views.shared import show_failure

#: The most songs a within-distance expansion may return (the gateway's cap).
MAX_WITHIN = 500
COUNT, DISTANCE = "A number of songs", "Every song within a distance"


def playlist_label(playlist: dict[str, Any]) -> str:
    """``name (n songs, k in the catalog)`` for the picker (options are shown as text)."""
    total, known = playlist.get("items_total"), playlist.get("in_catalog")
    counts = [f"{total} songs"] if total is not None else []
    if known is not None:
        counts.append(f"{known} in the catalog")
    return f"{playlist['name']} ({', '.join(counts)})" if counts else str(playlist["name"])


def _load(client: GatewayClient) -> None:
    try:
        items = client.my_playlists()
    except ApiError as exc:
        show_failure("Could not load your Spotify playlists", exc, route_may_be_missing=True)
        return
    st.session_state[state.MY_PLAYLISTS] = {"cookie": client.session_cookie, "items": items}


def render_expand(client: GatewayClient, controls: Controls) -> None:
    """Pick a playlist, a mode, and expand it; the answer becomes the shown recommendations."""
    with st.expander("Or expand one of your Spotify playlists", icon=":material/playlist_add:"):
        loaded = st.session_state.get(state.MY_PLAYLISTS)
        if loaded is not None and loaded.get("cookie") != client.session_cookie:
            loaded = None  # another listener's list
        label = "Reload my playlists" if loaded else "Show my playlists"
        if st.button(label, key="load_playlists", icon=":material/queue_music:"):
            _load(client)
            loaded = st.session_state.get(state.MY_PLAYLISTS)
        if not loaded:
            st.caption("Emergify reads your playlists from Spotify when you ask.")
            return
        playlists = {p["id"]: p for p in loaded["items"]}
        if not playlists:
            st.caption("You have no Spotify playlists yet.")
            return
        picked = st.selectbox(
            "Playlist to expand",
            options=list(playlists),
            format_func=lambda i: playlist_label(playlists[i]),
            key="expand_playlist",
        )
        mode = st.radio("How many", [COUNT, DISTANCE], key="expand_mode", horizontal=True)
        within: float | None = None
        if mode == COUNT:
            limit = controls.limit
            st.caption(f"{limit} songs (the number chosen above), none already in the playlist.")
        else:
            within_col, cap_col = st.columns(2)
            within = float(
                within_col.number_input(
                    "Distance threshold",
                    min_value=0.1,
                    max_value=50.0,
                    value=3.0,
                    step=0.1,
                    key="expand_within",
                    help="Manhattan distance on standardized audio features: every song at "
                    "most this far from one of the playlist's songs.",
                )
            )
            limit = int(
                cap_col.number_input("At most", 1, MAX_WITHIN, 100, step=10, key="expand_cap")
            )
        if st.button("Expand this playlist", key="expand", type="primary"):
            try:
                answer = client.expand_playlist(
                    picked,
                    limit=limit,
                    within_distance=within,
                    max_popularity=controls.max_popularity,
                    max_per_artist=controls.max_per_artist,
                )
            except ApiError as exc:
                st.error(f"Could not expand the playlist. {md_text(exc)}")
            else:
                answer["expanded"] = playlists[picked]
                keep_results(answer, "expand")
