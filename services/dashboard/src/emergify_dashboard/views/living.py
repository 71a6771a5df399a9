"""Living playlists: create (from the favourites or from taste), see what was added and when,
refresh, stop."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import SPOTIFY_PREFIX, ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text
from emergify_dashboard.views.catalog import when
from emergify_dashboard.views.recommendations import Controls
from emergify_dashboard.views.shared import notice, show_failure, song_names

FAVOURITES, TASTE = "My current favourites", "My taste (Spotify history)"


def _load(client: GatewayClient) -> dict[str, Any]:
    """Ask the gateway; the answer (or the failure) is kept until a change or a reload, so
    reruns do not repeat the call."""
    loaded: dict[str, Any] = {"cookie": client.session_cookie, "items": None, "error": None}
    try:
        loaded["items"] = client.living_playlists()
    except ApiError as exc:
        loaded["error"] = exc
    st.session_state[state.LIVING] = loaded
    return loaded


def living_list(client: GatewayClient) -> list[dict[str, Any]] | None:
    """The listener's living playlists (None when the gateway would not say), loaded once per
    session cookie and again after a change or on request."""
    loaded = st.session_state.get(state.LIVING)
    if loaded is None or loaded.get("cookie") != client.session_cookie:
        loaded = _load(client)
    if loaded["error"] is not None:
        show_failure("Could not load your living playlists", loaded["error"], True)
    return loaded["items"]


def _changed(kind: str, text: str) -> None:
    """Leave a message, forget the cached list, redraw."""
    st.session_state[state.LIVING_NOTICE] = {"kind": kind, "text": text}
    st.session_state.pop(state.LIVING, None)
    st.rerun()


def list_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per living playlist: name, state, size, songs added, last refresh."""
    return pd.DataFrame(
        {
            "name": [p["name"] for p in items],
            "state": ["stopped" if p.get("stopped_at") else "living" for p in items],
            "size": [p.get("size") for p in items],
            "songs added": [p.get("songs_added", 0) for p in items],
            "last refresh": [when(p.get("last_refresh")) for p in items],
            "created": [when(p.get("created_at")) for p in items],
            "spotify": [p.get("url") or "" for p in items],
        }
    )


def songs_frame(client: GatewayClient, songs: list[dict[str, Any]]) -> pd.DataFrame:
    """A living playlist's songs, nearest first, with when each one entered."""
    names = song_names(client, [s["track_id"] for s in songs])
    return pd.DataFrame(
        {
            "song": [names[s["track_id"]]["name"] for s in songs],
            "artists": [", ".join(names[s["track_id"]]["artists"]) for s in songs],
            "distance": [s.get("distance") for s in songs],
            "added": [when(s.get("added_at")) for s in songs],
        }
    )


def _render_create(client: GatewayClient, favourites: list[dict[str, Any]], controls: Controls):
    st.markdown("**Start a living playlist**")
    name = st.text_input(
        "Name", value="Emergify · living", max_chars=100, key="living_name"
    ).strip()
    size_col, source_col = st.columns(2)
    size = size_col.slider("Songs", 5, 100, 20, key="living_size")
    source = source_col.radio(
        "Seeds",
        [FAVOURITES, TASTE],
        key="living_source",
        captions=[f"{len(favourites)} chosen on Discover", "re-drawn on every refresh"],
    )
    st.caption(
        f"Rules from Discover: popularity at most {controls.max_popularity}, at most "
        f"{controls.max_per_artist} songs per artist."
    )
    needs_seeds = source == FAVOURITES and not favourites
    if needs_seeds:
        st.caption("Choose favourites on Discover first, or start from your taste.")
    if st.button(
        "Create living playlist",
        key="living_create",
        type="primary",
        disabled=not name or needs_seeds,
        icon=":material/auto_mode:",
    ):
        try:
            created = client.create_living_playlist(
                name,
                size,
                controls.max_popularity,
                controls.max_per_artist,
                seeds=[s["track_id"] for s in favourites] if source == FAVOURITES else None,
            )
        except ApiError as exc:
            st.error(f"Could not create the living playlist. {md_text(exc)}")
        else:
            songs = created.get("songs") or []
            _changed(
                "success",
                f"Created “{md_text(created.get('name', name))}” with {len(songs)} songs; "
                "Emergify adds new songs that fit as they arrive.",
            )


def _render_one(client: GatewayClient, playlist: dict[str, Any]) -> None:
    try:
        detail = client.living_playlist(playlist["id"])
    except ApiError as exc:
        st.error(f"Could not load this living playlist. {md_text(exc)}")
        return
    url = detail.get("url")
    if isinstance(url, str) and url.startswith("https://open.spotify.com/"):
        st.link_button("Open in Spotify", url, icon=":material/open_in_new:")
    st.caption(
        f"Last refresh: {when(detail.get('last_refresh'))} · songs added since it started: "
        f"{detail.get('songs_added', 0)}"
    )
    songs = detail.get("songs") or []
    if songs:
        st.dataframe(
            songs_frame(client, songs),
            hide_index=True,
            key="living_songs",
            column_config={"distance": st.column_config.NumberColumn(format="%.3f")},
        )
    stopped = bool(detail.get("stopped_at"))
    refresh_col, stop_col = st.columns(2)
    if refresh_col.button(
        "Refresh now", key="living_refresh", disabled=stopped, icon=":material/refresh:"
    ):
        try:
            client.refresh_living_playlist(playlist["id"])
        except ApiError as exc:
            st.error(f"Could not refresh it. {md_text(exc)}")
        else:
            _changed("success", f"Refreshed “{md_text(playlist['name'])}”: re-ranked now.")
    if stop_col.button("Stop", key="living_stop", disabled=stopped, icon=":material/stop:"):
        try:
            client.stop_living_playlist(playlist["id"])
        except ApiError as exc:
            st.error(f"Could not stop it. {md_text(exc)}")
        else:
            _changed(
                "info",
                f"Stopped “{md_text(playlist['name'])}”: Emergify changes it no more; the "
                "Spotify playlist stays yours.",
            )


def render_living(
    client: GatewayClient,
    signed_in: bool,
    favourites: list[dict[str, Any]],
    controls: Controls,
) -> None:
    """The living-playlists panel."""
    st.subheader("Living playlists")
    st.caption(
        "A living playlist keeps itself fresh: new songs that come closer than its furthest "
        "one replace it in your Spotify playlist within seconds."
    )
    if not signed_in:
        st.info("Sign in with Spotify to keep living playlists in your account.")
        st.link_button("Sign in with Spotify", client.url(f"{SPOTIFY_PREFIX}/login"))
        return
    notice(state.LIVING_NOTICE)
    _render_create(client, favourites, controls)
    if st.button("Reload the list", key="living_reload", icon=":material/sync:"):
        st.session_state.pop(state.LIVING, None)
    items = living_list(client)
    if items is None:
        return
    if not items:
        st.caption("No living playlists yet.")
        return
    st.markdown(f"**Your living playlists ({len(items)})**")
    st.dataframe(
        list_frame(items),
        hide_index=True,
        key="living_table",
        column_config={
            "spotify": st.column_config.LinkColumn("open", display_text="Open in Spotify")
        },
    )
    by_id = {p["id"]: p for p in items}
    picked = st.selectbox(
        "See what was added and when",
        options=list(by_id),
        format_func=lambda i: by_id[i]["name"],
        key="living_pick",
    )
    _render_one(client, by_id[picked])
