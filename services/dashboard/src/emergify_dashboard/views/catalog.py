"""The catalog panel: size, freshness, model; and CSV upload with per-row errors."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st

from emergify_dashboard import state
from emergify_dashboard.config import Settings
from emergify_dashboard.gateway_client import ApiError, GatewayClient
from emergify_dashboard.plain_text import md_text


def ago(seconds: float | None) -> str:
    """``42 s ago``, ``3 min ago``, ``2 h ago``, ``4 d ago``; ``never`` for None."""
    if seconds is None:
        return "never"
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def when(timestamp: str | None) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM UTC`` (``—`` when missing)."""
    if not timestamp:
        return "—"
    moment = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M UTC")


def rejected_frame(rejected: list[dict[str, Any]]) -> pd.DataFrame:
    """One line per rejected row: row number, track id and what is wrong."""
    return pd.DataFrame(
        {
            "row": [r["row"] for r in rejected],
            "track_id": [r.get("track_id") or "" for r in rejected],
            "errors": ["; ".join(r["errors"]) for r in rejected],
        }
    )


def render_status(client: GatewayClient) -> None:
    """Song count, last update, model version and silhouette, speed-layer freshness."""
    try:
        catalog = client.catalog()
        model = client.model()
    except ApiError as exc:
        st.error(f"Could not load the catalog status. {md_text(exc)}")
        return
    songs_col, update_col, model_col, fresh_col = st.columns(4)
    songs_col.metric("Songs", f"{catalog['songs']:,}")
    update_col.metric("Last update", when(catalog.get("last_update")))
    if model:
        model_col.metric(
            "Model", f"v{model['version']}", help=f"k = {model['k']}, trained on {model['songs']}"
        )
        model_col.caption(f"silhouette {model['silhouette']:.3f} · k = {model['k']}")
    else:
        model_col.metric("Model", "none yet")
        model_col.caption("the batch layer trains one once songs are in")
    freshness = catalog.get("freshness") or {}
    fresh_col.metric("Speed layer", ago(freshness.get("seconds_since_last_batch")))
    lag = (catalog.get("speed_layer") or {}).get("lag")
    fresh_col.caption(
        "stream processor not answering" if lag is None else f"{lag} songs waiting on the topic"
    )


def render_upload(client: GatewayClient, settings: Settings) -> None:
    """Upload a CSV (Exportify or Kaggle layout) with a progress bar and per-row errors."""
    st.markdown("**Add songs (CSV upload)**")
    if not settings.dashboard_uploads:
        st.caption("Uploads are turned off on this dashboard (EMERGIFY_DASHBOARD_UPLOADS).")
        return
    upload = st.file_uploader(
        "A CSV in the Exportify or Kaggle layout",
        type=["csv"],
        key="upload_file",
        max_upload_size=settings.dashboard_max_upload_mb,
    )
    if st.button("Upload", key="upload", disabled=upload is None) and upload is not None:
        progress = st.progress(0.0, text=f"uploading {md_text(upload.name)}…")

        def on_progress(done: int, total: int) -> None:
            share = done / total if total else 1.0
            progress.progress(
                min(share, 1.0), text=f"uploading {md_text(upload.name)}: {share:.0%}"
            )

        try:
            answer = client.upload_csv(upload.name, upload.getvalue(), on_progress)
        except ApiError as exc:
            progress.empty()
            st.error(f"Upload failed. {md_text(exc)}")
        else:
            progress.progress(1.0, text=f"uploaded {md_text(upload.name)}")
            st.session_state[state.UPLOAD] = answer
    answer = st.session_state.get(state.UPLOAD)
    if answer:
        rejected = answer.get("rejected", [])
        message = f"Upload {md_text(answer['upload_id'])}: {answer['accepted']} songs accepted"
        if rejected:
            st.warning(f"{message}, {len(rejected)} rows rejected (below).")
            st.dataframe(rejected_frame(rejected), hide_index=True, key="rejected_rows")
        else:
            st.success(f"{message}, none rejected.")
        st.caption("Accepted songs become recommendable within seconds (the speed layer).")


def render_catalog(client: GatewayClient, settings: Settings) -> None:
    """The whole catalog panel."""
    st.subheader("The catalog")
    render_status(client)
    st.divider()
    render_upload(client, settings)
