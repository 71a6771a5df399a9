"""Controls, the recommended songs (table, feature plot, cluster map) and Save to Spotify."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import streamlit as st

from emergify_dashboard import charts, state
from emergify_dashboard.config import Settings
from emergify_dashboard.gateway_client import SPOTIFY_PREFIX, ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text
from emergify_dashboard.views.feedback import render_feedback, render_notice, render_seeds_used

#: Where the shown answer came from, for its caption.
SOURCES = {
    "favourites": "like your favourites",
    "taste": "for you, from your Spotify history",
    "expand": "to expand your playlist",
}


@dataclass(frozen=True)
class Controls:
    """The playlist rules the listener chose."""

    limit: int
    max_popularity: int
    max_per_artist: int


def render_controls(settings: Settings) -> Controls:
    """Number of songs, the emerging threshold (default: the shared setting) and songs per
    artist."""
    threshold = settings.emerging_max_popularity
    st.subheader("2 · Shape the playlist")
    limit_col, popularity_col, artist_col = st.columns(3)
    limit = limit_col.slider("Number of songs", 5, 50, 20, key="limit")
    max_popularity = popularity_col.slider(
        "Emerging threshold (max popularity)",
        0,
        100,
        threshold,
        key="max_popularity",
        help="Only songs whose Spotify popularity (0–100) is at most this.",
    )
    max_per_artist = artist_col.number_input(
        "Max songs per artist", min_value=1, max_value=10, value=2, step=1, key="max_per_artist"
    )
    return Controls(int(limit), int(max_popularity), int(max_per_artist))


def request_recommendations(
    client: GatewayClient, favourites: list[dict[str, Any]], controls: Controls
) -> None:
    """Ask the gateway and keep the answer (or show why not)."""
    try:
        answer = client.recommendations(
            [s["track_id"] for s in favourites],
            limit=controls.limit,
            max_popularity=controls.max_popularity,
            max_per_artist=controls.max_per_artist,
        )
    except ApiError as exc:
        st.error(f"Could not get recommendations. {md_text(exc)}")
        return
    keep_results(answer, "favourites")


def keep_results(answer: dict[str, Any], source: str) -> None:
    """Show ``answer`` as the current recommendations (a new answer: nothing saved yet)."""
    answer["source"] = source
    st.session_state[state.RESULTS] = answer
    st.session_state.pop(state.PLAYLIST, None)


def request_for_me(client: GatewayClient, controls: Controls, include_recent: bool) -> None:
    """Recommend for me: seeds from the listener's Spotify history (the answer names them)."""
    try:
        answer = client.recommend_for_me(
            limit=controls.limit,
            max_popularity=controls.max_popularity,
            max_per_artist=controls.max_per_artist,
            include_recent=include_recent,
        )
    except ApiError as exc:
        st.error(f"Could not recommend from your Spotify history. {md_text(exc)}")
        return
    keep_results(answer, "taste")


def _distance_text(results: dict[str, Any]) -> str:
    """What the distance column measures, from the similarity the ranking used."""
    weight = (results.get("similarity") or {}).get("artist_weight") or 0
    if weight:
        return (
            "Manhattan distance on standardized audio features plus "
            f"{weight:g} x the distance between the artists' sound profiles"
        )
    return "Manhattan distance on standardized audio features"


def render_results(
    client: GatewayClient, settings: Settings, signed_in: bool = False
) -> dict[str, Any] | None:
    """The last recommendations: feedback buttons, seeds used, table, feature plot, cluster
    map."""
    results = st.session_state.get(state.RESULTS)
    if not results:
        return None
    items = results["items"]
    st.subheader("3 · Your emerging playlist")
    render_notice()
    render_seeds_used(client, results)
    if not items:
        st.warning(
            "No song passes these rules: raise the emerging threshold or allow more songs "
            "per artist."
        )
        return results
    version = results.get("model_version")
    source = SOURCES.get(results.get("source", "favourites"), "")
    st.caption(
        f"{len(items)} songs {source}, nearest first ({_distance_text(results)}"
        + (f", model v{version})" if version is not None else ")")
    )
    st.dataframe(
        charts.playlist_frame(items),
        hide_index=True,
        key="results_table",
        column_config={
            "#": st.column_config.NumberColumn(width="small"),
            "distance": st.column_config.NumberColumn(format="%.3f", width="small"),
            "popularity": st.column_config.NumberColumn(width="small"),
            "spotify": st.column_config.LinkColumn(
                "open", display_text="Open in Spotify", width="medium"
            ),
        },
    )
    if signed_in:
        render_feedback(client, items)
    features_col, map_col = st.columns(2)
    with features_col:
        st.markdown("**Sound: your favourite vs the picks**")
        frame = charts.features_frame(results["seed"]["features"], items)
        st.altair_chart(charts.features_chart(frame), key="features_chart")
        if len(results["seed"]["track_ids"]) > 1:
            st.caption("With several favourites, “favourite” is their mean.")
    with map_col:
        st.markdown("**Where they sit: the cluster map (PCA 2-D)**")
        _render_cluster_map(client, settings, results)
    return results


def _render_cluster_map(client: GatewayClient, settings: Settings, results: dict[str, Any]) -> None:
    try:
        clusters = client.clusters(settings.dashboard_clusters_sample)
    except ApiError as exc:
        st.error(f"Could not load the cluster map. {md_text(exc)}")
        return
    if clusters is None:
        st.info("No clustering model yet: the map appears once the batch layer has trained one.")
        return
    seed_ids = results["seed"]["track_ids"]
    pick_ids = [i["track_id"] for i in results["items"]]
    frame = charts.cluster_frame(clusters, seed_ids, pick_ids)
    st.markdown(
        '<span style="color:#e4572e">◆</span> favourite &nbsp; '
        '<span style="color:#1db954">●</span> recommended &nbsp; '
        '<span style="opacity:0.6">· catalog, by cluster</span>',
        unsafe_allow_html=True,
    )
    st.altair_chart(charts.cluster_chart(frame), key="cluster_map")
    missing = charts.missing_from_map(frame, seed_ids, pick_ids)
    caption = (
        f"{len(frame)} of {clusters['songs']} catalog songs, model v{clusters['model_version']}."
    )
    if missing:
        caption += f" {missing} of your favourites and picks fall outside this sample."
    st.caption(caption)


def default_playlist_name(
    favourites: list[dict[str, Any]], results: dict[str, Any] | None = None
) -> str:
    """``Emergify · like <first favourite>`` (and how many more); for an expansion or a taste
    answer, what it came from."""
    results = results or {}
    source = results.get("source")
    if source == "expand" and results.get("expanded"):
        return f"Emergify · more like {results['expanded']['name']}"[:200]
    if source == "taste":
        return "Emergify · for me"
    if not favourites:
        return "Emergify discoveries"
    more = f" +{len(favourites) - 1}" if len(favourites) > 1 else ""
    return f"Emergify · like {favourites[0]['name']}{more}"[:200]


def render_save(
    client: GatewayClient,
    signed_in: bool,
    favourites: list[dict[str, Any]],
    results: dict[str, Any],
) -> None:
    """Name the playlist, save it to the listener's Spotify account, show the link."""
    items = results["items"]
    if not items:
        return
    st.subheader("4 · Save to Spotify")
    if not signed_in:
        st.info("Sign in with Spotify to save this playlist to your account.")
        st.link_button("Sign in with Spotify", client.url(f"{SPOTIFY_PREFIX}/login"))
        return
    name_col, public_col = st.columns([3, 1], vertical_alignment="bottom")
    name = name_col.text_input(
        "Playlist name",
        value=default_playlist_name(favourites, results),
        max_chars=200,
        key="playlist_name",
    ).strip()
    public = public_col.checkbox("Public", value=False, key="playlist_public")
    if st.button("Save to Spotify", key="save_playlist", type="primary", disabled=not name):
        seeds_text = ", ".join(s["name"] for s in favourites)[:200]
        try:
            created = client.create_playlist(
                name,
                [i["track_id"] for i in items],
                description=f"Emerging artists that sound like {seeds_text}. Made by Emergify."[
                    :300
                ],
                public=public,
            )
        except ApiError as exc:
            st.error(f"Could not save the playlist. {md_text(exc)}")
        else:
            st.session_state[state.PLAYLIST] = created
    created = st.session_state.get(state.PLAYLIST)
    if created:
        st.success(
            f"Saved “{md_text(created['name'])}” with {created['added']} songs to your Spotify."
        )
        st.markdown(f"Your playlist: {md_text(created['url'])}")
        st.link_button(
            "Open the playlist in Spotify", created["url"], icon=":material/open_in_new:"
        )
