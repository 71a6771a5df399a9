"""Like / dislike / ban-artist on each recommended song, and which seeds an answer used."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text
from emergify_dashboard.views.shared import notice, song_names

#: (signal, button label, icon) in the order they are shown.
BUTTONS = (
    ("like", "Like", ":material/thumb_up:"),
    ("dislike", "Dislike", ":material/thumb_down:"),
    ("ban_artist", "Ban artist", ":material/block:"),
)


def _artist_keys(item: dict[str, Any]) -> set[str]:
    return {" ".join(a.casefold().split()) for a in item.get("artists") or []}


def apply_feedback(items: list[dict[str, Any]], item: dict[str, Any], signal: str) -> list[str]:
    """Remove from ``items`` (in place) what ``signal`` rules out: the song for a dislike,
    every song of its artists for a ban; returns the removed track ids."""
    if signal == "dislike":
        gone = [i for i in items if i["track_id"] == item["track_id"]]
    elif signal == "ban_artist":
        banned = _artist_keys(item)
        gone = [i for i in items if _artist_keys(i) & banned]
    else:
        return []
    removed = {i["track_id"] for i in gone}
    items[:] = [i for i in items if i["track_id"] not in removed]
    return [i["track_id"] for i in gone]


def _describe(item: dict[str, Any]) -> str:
    return f"“{item['name']}” by {', '.join(item.get('artists') or []) or 'unknown artists'}"


def _message(item: dict[str, Any], signal: str, removed: list[str]) -> str:
    song = md_text(_describe(item))
    if signal == "like":
        return f"Liked {song}: it becomes a seed of your next recommendations."
    if signal == "dislike":
        return f"Disliked {song}: removed from this list; Emergify will not recommend it again."
    artists = md_text(", ".join(item.get("artists") or []))
    return (
        f"Banned {artists}: removed {len(removed)} of their songs from this list; Emergify "
        "will not recommend them again."
    )


def send(client: GatewayClient, item: dict[str, Any], signal: str) -> None:
    """Send the feedback; on its 202, update the shown list and leave a message for the
    rerun (the table above the buttons is redrawn from the updated list)."""
    try:
        client.send_feedback(item["track_id"], signal)
    except ApiError as exc:
        st.error(f"Could not send your feedback. {md_text(exc)}")
        return
    results = st.session_state.get(state.RESULTS) or {}
    removed = apply_feedback(results.get("items", []), item, signal)
    if removed:
        results["count"] = len(results["items"])
    st.session_state[state.FEEDBACK_NOTICE] = {
        "kind": "success",
        "text": _message(item, signal, removed),
    }
    st.rerun()


def render_feedback(client: GatewayClient, items: list[dict[str, Any]]) -> None:
    """One line per recommended song with its three buttons (a signed-in listener only)."""
    st.markdown("**Tell Emergify what you think**")
    st.caption(
        "Like makes a song a seed; dislike means never this song again; ban artist means "
        "never their songs again. Erase it all under “What Emergify keeps”."
    )
    for item in list(items):
        text_col, *button_cols = st.columns([5, 1, 1, 1.3], vertical_alignment="center")
        text_col.markdown(md_text(f"{item['name']} — {', '.join(item.get('artists') or [])}"))
        for col, (signal, label, icon) in zip(button_cols, BUTTONS, strict=True):
            if col.button(label, key=f"{signal}_{item['track_id']}", icon=icon):
                send(client, item, signal)


def render_notice() -> None:
    """The last feedback's message, once."""
    notice(state.FEEDBACK_NOTICE)


def seeds_frame(client: GatewayClient, seeds_used: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per seed an answer used: song, artists, weight and why."""
    names = song_names(client, [s["track_id"] for s in seeds_used])
    return pd.DataFrame(
        {
            "song": [names[s["track_id"]]["name"] for s in seeds_used],
            "artists": [", ".join(names[s["track_id"]]["artists"]) for s in seeds_used],
            "weight": [float(s.get("weight", 1.0)) for s in seeds_used],
            "why": [str(s.get("why", "")) for s in seeds_used],
        }
    )


def render_seeds_used(client: GatewayClient, results: dict[str, Any]) -> None:
    """Which seeds the answer used and why (taste and expand answers carry them)."""
    seeds_used = results.get("seeds_used")
    if not seeds_used:
        return
    with st.expander(f"Seeds used ({len(seeds_used)}) and why", expanded=True):
        # A dataframe shows cells as text, never as markdown.
        st.dataframe(
            seeds_frame(client, seeds_used),
            hide_index=True,
            key="seeds_used_table",
            column_config={"weight": st.column_config.NumberColumn(format="%.2f")},
        )
