"""What the results look like: the playlist table, the feature comparison and the cluster map.

Plain functions from the gateway's JSON to pandas frames and Altair charts (Altair ships with
Streamlit), so tests can check the data without a browser.
"""

from __future__ import annotations

from typing import Any

import altair as alt
import pandas as pd

from emergify_contracts.song import AUDIO_FEATURES

# Loudness (dB) and tempo (BPM) are not on the 0..1 scale of the other seven features; the
# plot maps them onto it so that one axis fits all nine (the ranking uses standardized values).
_LOUDNESS_DB = (-60.0, 5.0)
_TEMPO_MAX_BPM = 250.0


def unit_scale(feature: str, value: float) -> float:
    """``value`` of ``feature`` on a 0..1 scale for plotting."""
    if feature == "loudness":
        low, high = _LOUDNESS_DB
        return min(max((value - low) / (high - low), 0.0), 1.0)
    if feature == "tempo":
        return min(max(value / _TEMPO_MAX_BPM, 0.0), 1.0)
    return float(value)


def why_text(explanation: dict[str, Any]) -> str:
    """What made a song close, strongest first (own sound / artist's sound), and the genres
    it shares with its seed: ``own sound, shared genres: indie pop, lo-fi``."""
    shared = explanation.get("shared_genres") or []
    reasons = [
        f"shared genres: {', '.join(shared)}" if reason == "shared genres" and shared else reason
        for reason in explanation.get("reasons", [])
    ]
    return ", ".join(reasons)


def playlist_frame(items: list[dict[str, Any]]) -> pd.DataFrame:
    """The results table: one row per recommended song, nearest first."""
    return pd.DataFrame(
        {
            "#": list(range(1, len(items) + 1)),
            "song": [i["name"] for i in items],
            "artists": [", ".join(i["artists"]) for i in items],
            "genres": [", ".join(i.get("genres", [])) for i in items],
            "distance": [round(float(i["distance"]), 3) for i in items],
            "why": [why_text(i.get("explanation", {})) for i in items],
            "popularity": [i.get("popularity") for i in items],
            "spotify": [i["spotify_url"] for i in items],
        }
    )


def features_frame(seed_features: dict[str, float], items: list[dict[str, Any]]) -> pd.DataFrame:
    """Long frame (feature, who, song, value, raw) of the favourite and every pick."""
    rows: list[dict[str, Any]] = []
    for feature in AUDIO_FEATURES:
        raw = float(seed_features[feature])
        rows.append(
            {
                "feature": feature,
                "who": "favourite",
                "song": "favourite",
                "value": unit_scale(feature, raw),
                "raw": raw,
            }
        )
        for item in items:
            raw = float(item["features"][feature])
            rows.append(
                {
                    "feature": feature,
                    "who": "recommended",
                    "song": item["name"],
                    "value": unit_scale(feature, raw),
                    "raw": raw,
                }
            )
    return pd.DataFrame(rows)


def features_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Grouped horizontal bars (readable at phone width): the favourite's features next to
    the picks' mean, one tick per pick."""
    colours = alt.Scale(domain=["favourite", "recommended"], range=["#e4572e", "#1db954"])
    means = frame.groupby(["feature", "who"], as_index=False)["value"].mean()
    means["label"] = means["who"].map(
        {"favourite": "favourite", "recommended": "recommended (mean)"}
    )
    y = alt.Y("feature:N", sort=list(AUDIO_FEATURES), title=None)
    y_offset = alt.YOffset("who:N", sort=["favourite", "recommended"])
    x = alt.X("value:Q", title="0..1 (loudness, tempo rescaled)", scale=alt.Scale(domain=[0, 1]))
    bars = (
        alt.Chart(means)
        .mark_bar()
        .encode(
            y=y,
            yOffset=y_offset,
            x=x,
            color=alt.Color("who:N", scale=colours, legend=alt.Legend(title=None, orient="top")),
            tooltip=[
                alt.Tooltip("label:N", title="series"),
                "feature:N",
                alt.Tooltip("value:Q", format=".2f"),
            ],
        )
    )
    picks = frame[frame["who"] == "recommended"]
    ticks = (
        alt.Chart(picks)
        .mark_tick(color="#0b6b2f", opacity=0.6, thickness=2)
        .encode(
            y=y,
            yOffset=y_offset,
            x=x,
            tooltip=["song:N", "feature:N", alt.Tooltip("raw:Q", title="value", format=".3f")],
        )
    )
    return alt.layer(bars, ticks).properties(height=alt.Step(14))


def cluster_frame(
    clusters: dict[str, Any], seed_ids: list[str], pick_ids: list[str]
) -> pd.DataFrame:
    """The sampled songs in the PCA plane, each marked favourite / recommended / catalog."""
    seeds, picks = set(seed_ids), set(pick_ids)
    points = clusters["points"]

    def role(track_id: str) -> str:
        if track_id in seeds:
            return "favourite"
        if track_id in picks:
            return "recommended"
        return "catalog"

    return pd.DataFrame(
        {
            "x": [p["x"] for p in points],
            "y": [p["y"] for p in points],
            "cluster": [str(p["cluster"]) for p in points],
            "song": [p["name"] for p in points],
            "track_id": [p["track_id"] for p in points],
            "role": [role(p["track_id"]) for p in points],
        }
    )


def cluster_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """The catalog as faint dots coloured by cluster; favourites and picks drawn on top."""
    base = alt.Chart(frame).encode(
        x=alt.X("x:Q", title="PC 1"),
        y=alt.Y("y:Q", title="PC 2"),
        tooltip=["song:N", "cluster:N", "role:N"],
    )
    catalog = (
        base.transform_filter(alt.datum.role == "catalog")
        .mark_circle(size=14, opacity=0.35)
        .encode(color=alt.Color("cluster:N", legend=alt.Legend(title="cluster", orient="right")))
    )
    # Picks, then favourites on top: a favourite is never hidden under its neighbours.
    picks = (
        base.transform_filter(alt.datum.role == "recommended")
        .mark_point(filled=True, size=90, fill="#1db954", stroke="black", strokeWidth=1)
        .encode(opacity=alt.value(1.0))
    )
    favourites = (
        base.transform_filter(alt.datum.role == "favourite")
        .mark_point(shape="diamond", filled=True, size=300, fill="#e4572e", stroke="black")
        .encode(opacity=alt.value(1.0))
    )
    return alt.layer(catalog, picks, favourites).properties(height=380)


def missing_from_map(frame: pd.DataFrame, seed_ids: list[str], pick_ids: list[str]) -> int:
    """How many favourites and picks the sampled map does not show."""
    shown = set(frame["track_id"])
    return sum(1 for t in {*seed_ids, *pick_ids} if t not in shown)
