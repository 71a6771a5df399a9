"""Choose favourites: a random liked song, liked songs the catalog knows, or catalog search."""

from __future__ import annotations

from typing import Any

import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text

MAX_SEEDS = 50  # the recommender's limit


def seeds() -> list[dict[str, Any]]:
    """The chosen favourites, in the order they were added."""
    return st.session_state.setdefault(state.SEEDS, [])


def seed_entry(song: dict[str, Any]) -> dict[str, Any]:
    """A favourite as the page keeps it, from a search hit or a liked song."""
    return {
        "track_id": song.get("track_id") or song["id"],
        "name": song["name"],
        "artists": list(song["artists"]),
    }


def add_seeds(songs: list[dict[str, Any]]) -> int:
    """Add songs as favourites (repeats ignored, at most MAX_SEEDS); return how many were new."""
    chosen = seeds()
    known = {s["track_id"] for s in chosen}
    added = 0
    for song in songs:
        entry = seed_entry(song)
        if entry["track_id"] not in known and len(chosen) < MAX_SEEDS:
            chosen.append(entry)
            known.add(entry["track_id"])
            added += 1
    return added


def describe(song: dict[str, Any]) -> str:
    """``name — artists`` for lists and pickers."""
    return f"{song['name']} — {', '.join(song['artists'])}"


def _remove(track_id: str) -> None:
    st.session_state[state.SEEDS] = [s for s in seeds() if s["track_id"] != track_id]


def _clear() -> None:
    st.session_state[state.SEEDS] = []


def _render_liked(client: GatewayClient) -> None:
    st.markdown("**From your liked songs**")
    if st.button("Pick a random liked song", key="random_favourite", icon=":material/casino:"):
        try:
            favourite = client.favourite()
        except ApiError as exc:
            st.error(f"Could not pick a liked song. {md_text(exc)}")
        else:
            add_seeds([favourite["song"]])
            st.toast(f"Added {md_text(describe(favourite['song']))}")
    try:
        liked = client.liked(limit=50)
    except ApiError as exc:
        st.error(f"Could not load your liked songs. {md_text(exc)}")
        return
    known = [s for s in liked["items"] if s.get("in_catalog")]
    if not liked.get("catalog_available", True):
        st.caption("The catalog did not answer, so liked songs cannot be checked right now.")
    if not known:
        st.caption("None of your latest liked songs is in Emergify's catalog; search below.")
        return
    options = {s["id"]: s for s in known}
    picked = st.multiselect(
        f"Liked songs the catalog knows ({len(known)} of your latest {len(liked['items'])})",
        options=list(options),
        format_func=lambda i: describe(options[i]),
        key="liked_pick",
        placeholder="Choose liked songs",
    )
    if st.button("Add liked songs", key="add_liked", disabled=not picked):
        add_seeds([options[i] for i in picked])


def _render_search(client: GatewayClient) -> None:
    st.markdown("**Search the catalog**")
    query = st.text_input(
        "Song or artist",
        key="search_q",
        placeholder="e.g. a song or artist you love",
        max_chars=200,
    ).strip()
    if not query:
        return
    try:
        hits = client.search(query, limit=20)
    except ApiError as exc:
        st.error(f"Search failed. {md_text(exc)}")
        return
    if not hits:
        st.caption(f"No catalog song or artist matches “{md_text(query)}”.")
        return
    options = {h["track_id"]: h for h in hits}
    picked = st.multiselect(
        f"Matches for “{query}”",
        options=list(options),
        format_func=lambda i: describe(options[i]),
        key="search_pick",
        placeholder="Choose songs",
    )
    if st.button("Add to favourites", key="add_search", disabled=not picked):
        add_seeds([options[i] for i in picked])


def render_favourites(client: GatewayClient, signed_in: bool) -> list[dict[str, Any]]:
    """The favourite pickers and the chosen list; returns the chosen favourites."""
    st.subheader("1 · Choose favourites")
    if signed_in:
        liked_col, search_col = st.columns(2)
        with liked_col:
            _render_liked(client)
        with search_col:
            _render_search(client)
    else:
        _render_search(client)

    chosen = seeds()
    if not chosen:
        st.info("No favourites yet: add one or several songs you love.")
        return chosen
    st.markdown(f"**Your favourites ({len(chosen)})**")
    for song in chosen:
        text_col, button_col = st.columns([6, 1], vertical_alignment="center")
        text_col.markdown(f"♥ {md_text(describe(song))}")
        button_col.button(
            "Remove",
            key=f"remove_{song['track_id']}",
            on_click=_remove,
            args=(song["track_id"],),
        )
    st.button("Clear favourites", key="clear_seeds", on_click=_clear)
    return chosen
