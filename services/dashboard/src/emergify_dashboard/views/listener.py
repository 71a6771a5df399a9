"""Sign in with Spotify, and who is signed in: profile, latest added song, top 10 artists."""

from __future__ import annotations

import html
from typing import Any

import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.gateway_client import SPOTIFY_PREFIX, ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text


def load_listener(client: GatewayClient) -> dict[str, Any]:
    """Profile, latest added song and top artists of the signed-in listener.

    Only the profile is required; the other two may fail on their own (a listener without
    liked songs has no latest one) and carry their error message instead.
    """
    listener: dict[str, Any] = {"profile": client.me()}
    try:
        listener["latest"] = client.latest_added()
    except ApiError as exc:
        listener["latest_error"] = str(exc)
    try:
        listener["top_artists"] = client.top_artists(10)
    except ApiError as exc:
        listener["top_artists"] = []
        listener["top_artists_error"] = str(exc)
    return listener


def cached_listener(client: GatewayClient) -> dict[str, Any]:
    """:func:`load_listener`, once per session cookie (every rerun would call Spotify)."""
    cached = st.session_state.get(state.LISTENER)
    if cached is None or cached.get("cookie") != client.session_cookie:
        cached = {"cookie": client.session_cookie, "data": load_listener(client)}
        st.session_state[state.LISTENER] = cached
    return cached["data"]


def _initials(name: str) -> str:
    return "".join(part[0] for part in name.split()[:2]).upper() or "?"


def avatar_html(name: str, image_url: str | None, size: int = 72, round_: bool = True) -> str:
    """A picture with the name's initials underneath, so a missing image degrades politely."""
    radius = "50%" if round_ else "10px"
    background = "linear-gradient(135deg,#1db954,#0b6b2f)"
    if image_url:
        background = f"url('{html.escape(image_url, quote=True)}') center/cover, {background}"
    return (
        f'<div style="width:{size}px;height:{size}px;border-radius:{radius};'
        f"background:{background};display:flex;align-items:center;justify-content:center;"
        f'color:white;font-weight:700;font-size:{size // 3}px;flex:none">'
        f"{html.escape(_initials(name))}</div>"
    )


def top_artists_html(artists: list[dict[str, Any]]) -> str:
    """A wrapping grid of artist cards: picture (where Spotify gives one), name, genres."""
    cards = []
    for artist in artists:
        image = artist["images"][0]["url"] if artist.get("images") else None
        name = html.escape(artist["name"])
        if artist.get("spotify_url"):
            url = html.escape(artist["spotify_url"], quote=True)
            name = f'<a href="{url}" target="_blank">{name}</a>'
        genres = html.escape(", ".join(artist.get("genres", [])[:2]))
        cards.append(
            '<div style="width:104px;display:flex;flex-direction:column;align-items:center;'
            'text-align:center;gap:4px">'
            f"{avatar_html(artist['name'], image, 72)}"
            f'<div style="font-size:0.85rem;line-height:1.1">{name}</div>'
            f'<div style="font-size:0.7rem;opacity:0.7">{genres}</div></div>'
        )
    return (
        '<div class="emergify-top-artists" style="display:flex;flex-wrap:wrap;gap:12px">'
        + "".join(cards)
        + "</div>"
    )


def render_sign_in(client: GatewayClient) -> None:
    """The sign-in button (a link: the gateway's login redirects to Spotify and back here)."""
    st.link_button(
        "Sign in with Spotify",
        client.url(f"{SPOTIFY_PREFIX}/login"),
        type="primary",
        icon=":material/login:",
    )
    st.caption(
        "Or continue without signing in: search the catalog for songs you love below. "
        "Signing in lets Emergify pick from your liked songs and save the playlist to Spotify."
    )


def _is_spotify_url(url: object) -> bool:
    """Only Spotify's own pages are offered as links."""
    return isinstance(url, str) and url.startswith("https://open.spotify.com/")


def render_listener(client: GatewayClient) -> bool:
    """The Spotify panel; returns whether a listener is signed in."""
    params = st.query_params
    if "spotify_error" in params:
        st.warning(
            f"Spotify sign-in did not complete ({md_text(params['spotify_error'])}). "
            "You can try again, or continue without signing in."
        )
    if client.session_cookie is None:
        render_sign_in(client)
        return False
    try:
        listener = cached_listener(client)
    except ApiError as exc:
        if exc.status == 401:
            st.info("Your Spotify sign-in has expired; sign in again.")
        else:
            st.error(f"Could not load your Spotify profile. {md_text(exc)}")
        render_sign_in(client)
        return False

    profile = listener["profile"]
    name = profile.get("display_name") or profile["id"]
    image = profile["images"][0]["url"] if profile.get("images") else None
    who, out = st.columns([5, 1], vertical_alignment="center")
    with who:
        st.markdown(
            '<div style="display:flex;align-items:center;gap:14px">'
            f"{avatar_html(name, image, 56)}"
            f'<div><div style="font-size:1.25rem;font-weight:700">{html.escape(name)}</div>'
            '<div style="opacity:0.7">signed in with Spotify</div></div></div>',
            unsafe_allow_html=True,
        )
    with out:
        # A POST from here: signing out must not be a link (any page could trigger a GET).
        if st.button("Sign out", key="sign_out"):
            try:
                client.sign_out()
            except ApiError as exc:
                st.error(f"Could not sign out. {md_text(exc)}")
            else:
                st.session_state[state.SIGNED_OUT_COOKIE] = client.session_cookie
                st.session_state.pop(state.LISTENER, None)
                st.rerun()

    latest_col, artists_col = st.columns([1, 2])
    with latest_col:
        st.markdown("**Latest added**")
        latest = listener.get("latest")
        if latest:
            st.markdown(f"{md_text(latest['name'])}  \n{md_text(', '.join(latest['artists']))}")
            if _is_spotify_url(latest.get("spotify_url")):
                st.link_button("Open in Spotify", latest["spotify_url"])
            if latest.get("in_catalog") is False:
                st.caption("Not in Emergify's catalog yet, so it cannot seed a playlist.")
        else:
            st.caption(md_text(listener.get("latest_error", "No liked songs yet.")))
    with artists_col:
        st.markdown("**Your top 10 artists**")
        if listener["top_artists"]:
            st.markdown(top_artists_html(listener["top_artists"]), unsafe_allow_html=True)
        else:
            st.caption(
                md_text(
                    listener.get("top_artists_error", "Spotify has no top artists for you yet.")
                )
            )
    return True
