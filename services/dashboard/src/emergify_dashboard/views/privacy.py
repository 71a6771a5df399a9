"""What Emergify keeps about the listener (their feedback), and erasing it."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import SPOTIFY_PREFIX, ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text
from emergify_dashboard.views.catalog import when
from emergify_dashboard.views.shared import show_failure, song_names

SIGNAL_TEXT = {
    "like": "liked",
    "dislike": "disliked",
    "ban_artist": "banned the artist",
    "skip": "skipped",
}


def feedback_frame(client: GatewayClient, items: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per kept feedback event: when, what, which song."""
    names = song_names(client, [i["track_id"] for i in items if i.get("track_id")])
    return pd.DataFrame(
        {
            "when": [when(i.get("at")) for i in items],
            "you": [SIGNAL_TEXT.get(i["signal"], i["signal"]) for i in items],
            "song": [names.get(i.get("track_id"), {}).get("name", "") for i in items],
            "artists": [
                ", ".join(names.get(i.get("track_id"), {}).get("artists", [])) for i in items
            ],
        }
    )


def render_privacy(client: GatewayClient, signed_in: bool) -> None:
    """The listener's feedback list and the erase button."""
    st.subheader("What Emergify keeps about me")
    st.caption(
        "Per listener Emergify keeps your feedback (song, what you said, when), the songs it "
        "recommended to you in recent days, and your living playlists. Erasing removes the "
        "feedback and the history; stop living playlists on their own tab."
    )
    if not signed_in:
        st.info("Sign in with Spotify to see and erase what Emergify keeps about you.")
        st.link_button("Sign in with Spotify", client.url(f"{SPOTIFY_PREFIX}/login"))
        return
    erased = st.session_state.get(state.ERASED)
    if erased:
        st.success(
            "Erased: your feedback and recommendation history are being deleted (it takes "
            f"effect within seconds; receipt {md_text(erased.get('event_id', ''))})."
        )
    if st.button("Show what Emergify keeps", key="show_feedback", icon=":material/visibility:"):
        try:
            st.session_state[state.MY_FEEDBACK] = client.my_feedback()
        except ApiError as exc:
            show_failure("Could not load your feedback", exc, route_may_be_missing=True)
    kept = st.session_state.get(state.MY_FEEDBACK)
    if kept is not None:
        items = kept.get("items", [])
        st.markdown(f"**{kept.get('count', len(items))} feedback events kept**")
        if items:
            st.dataframe(feedback_frame(client, items), hide_index=True, key="my_feedback_table")
    sure = st.checkbox(
        "I want Emergify to forget my feedback and recommendation history",
        key="erase_sure",
    )
    if st.button(
        "Erase what Emergify keeps about me",
        key="erase_feedback",
        disabled=not sure,
        icon=":material/delete_forever:",
    ):
        try:
            answer = client.erase_my_feedback()
        except ApiError as exc:
            st.error(f"Could not erase. {md_text(exc)}")
        else:
            st.session_state[state.ERASED] = answer or {}
            st.session_state.pop(state.MY_FEEDBACK, None)
            st.rerun()
