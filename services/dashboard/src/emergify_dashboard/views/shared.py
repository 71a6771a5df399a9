"""Small pieces the listener-loop views share: "not on this server", names of track ids."""

from __future__ import annotations

from typing import Any

import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text

#: A route the gateway (or the service behind it) does not have: an older server.
_MISSING = (404, 405, 501)


def show_failure(what: str, exc: ApiError, route_may_be_missing: bool = False) -> None:
    """Say why ``what`` failed. For a listing (``route_may_be_missing``), a route the server
    lacks is information, not an error: the page still works against an older gateway."""
    if route_may_be_missing and exc.status in _MISSING:
        st.info(
            f"{what}: this Emergify server does not offer it yet "
            f"(HTTP {exc.status}). {md_text(exc)}"
        )
    else:
        st.error(f"{what}. {md_text(exc)}")


def song_names(client: GatewayClient, track_ids: list[str]) -> dict[str, dict[str, Any]]:
    """``{track_id: {name, artists}}`` from the catalog, each id looked up once per session
    (a song the catalog does not answer for keeps its id as its name)."""
    cache: dict[str, dict[str, Any]] = st.session_state.setdefault(state.SONG_NAMES, {})
    for track_id in dict.fromkeys(track_ids):
        if track_id in cache:
            continue
        try:
            song = client.song(track_id)
        except ApiError:
            cache[track_id] = {"name": track_id, "artists": []}
        else:
            cache[track_id] = {"name": song["name"], "artists": list(song.get("artists") or [])}
    return {t: cache[t] for t in track_ids}


def notice(key: str) -> None:
    """Show, once, the message an action left under ``key`` before its rerun."""
    message = st.session_state.pop(key, None)
    if message:
        getattr(st, message["kind"])(message["text"])
