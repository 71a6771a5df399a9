"""The dashboard's page logic, driven by Streamlit's AppTest against a real API gateway."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from dashboard_pages import add_search_seeds, new_app, page_text, shown
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from emergify_cli.broker import free_port
from emergify_dashboard import charts, state
from emergify_dashboard.config import Settings
from emergify_dashboard.gateway_client import problem_message
from emergify_dashboard.views.catalog import ago

GOOD_ROW = (
    "id,name,popularity,duration_ms,explicit,artists,id_artists,release_date,danceability,"
    "energy,key,loudness,mode,speechiness,acousticness,instrumentalness,liveness,valence,tempo,"
    "time_signature\n"
    "0AbCdEfGhIjKlMnOpQrStU,Dashboard Song,3,200000,0,['Nobody Yet'],['1AbCdEfGhIjKlMnOpQrStU'],"
    "2024,0.5,0.6,1,-7.0,1,0.05,0.2,0.0,0.1,0.4,120.0,4\n"
    "1AbCdEfGhIjKlMnOpQrStU,Broken Song,3,200000,0,['Nobody Yet'],['1AbCdEfGhIjKlMnOpQrStU'],"
    "2024,1.7,0.6,1,-7.0,1,0.05,0.2,0.0,0.1,0.4,120.0,4\n"
)


def link_buttons(at: AppTest) -> dict[str, str]:
    return {b.proto.label: b.proto.url for b in at.get("link_button")}


def test_settings_never_fall_back_to_the_admin_key_and_uploads_are_off(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EMERGIFY_DASHBOARD_API_KEY", raising=False)
    monkeypatch.delenv("EMERGIFY_DASHBOARD_UPLOADS", raising=False)
    monkeypatch.setenv("EMERGIFY_ADMIN_API_KEY", "admin-key-0123456789abcdef")
    settings = Settings()
    assert settings.gateway_key() is None
    assert settings.dashboard_url == "http://127.0.0.1:8501"
    assert settings.dashboard_uploads is False
    monkeypatch.setenv("EMERGIFY_DASHBOARD_API_KEY", "read-key")
    assert Settings().gateway_key() == "read-key"


def test_each_browser_session_has_its_own_viewer_id_for_the_gateway(
    dashboard_stack, dashboard_env
) -> None:
    # The gateway keys the dashboard's rate limit on this id (tests/gateway/
    # test_gateway_dashboard_key.py): one per session, stable across reruns.
    first, second = new_app().run(), new_app().run()
    viewer = first.session_state[state.VIEWER]
    assert len(viewer) >= 16 and viewer != second.session_state[state.VIEWER]
    first.run()
    assert first.session_state[state.VIEWER] == viewer


def test_anonymous_page_offers_sign_in_search_and_the_catalog_panel(
    dashboard_stack, dashboard_env
) -> None:
    at = new_app().run()
    assert not at.exception
    assert at.title[0].value == "Emergify"
    login = f"{dashboard_stack.gateway.url}/api/v1/spotify/login"
    assert link_buttons(at)["Sign in with Spotify"] == login
    assert at.button(key="recommend").disabled  # no favourites yet
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Songs"] == f"{len(dashboard_stack.catalog):,}"
    assert metrics["Model"] == "v1"
    assert "silhouette" in page_text(at)
    assert "stream processor not answering" in page_text(at)  # not started here


def test_the_emerging_threshold_slider_starts_at_the_shared_setting(
    dashboard_stack, dashboard_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert new_app().run().slider(key="max_popularity").value == 30
    monkeypatch.setenv("EMERGIFY_EMERGING_MAX_POPULARITY", "12")
    assert new_app().run().slider(key="max_popularity").value == 12


def test_search_several_favourites_and_get_recommendations(dashboard_stack, dashboard_env) -> None:
    at = new_app().run()
    seeds = add_search_seeds(at, "love", 2)
    assert len(seeds) == 2
    at.slider(key="limit").set_value(12)
    at.slider(key="max_popularity").set_value(20)
    at.number_input(key="max_per_artist").set_value(1)
    at.button(key="recommend").click().run()
    assert not at.exception and not at.error
    results = at.session_state[state.RESULTS]
    items = results["items"]
    assert len(items) == 12
    assert not {i["track_id"] for i in items} & set(seeds)
    assert all(i["popularity"] is None or i["popularity"] <= 20 for i in items)
    artists = [a for i in items for a in i["artists"][:1]]
    assert len(artists) == len(set(artists))  # max one song per (first) artist
    # The recommendations table (the seeds-used table may come first).
    table = next(d.value for d in at.dataframe if "spotify" in d.value.columns)
    assert list(table.columns) == [
        "#",
        "song",
        "artists",
        "genres",
        "distance",
        "why",
        "popularity",
        "spotify",
    ]
    # Each song's genres are the catalog's, passed through the gateway.
    catalog = dashboard_stack.catalog
    assert list(table["genres"]) == [", ".join(catalog[i["track_id"]]["genres"]) for i in items]
    assert any(table["genres"])  # the sample CSV carries artist genres
    # The model's default similarity blends the song's and its artists' sound; genres the
    # song shares with its seed are named after them.
    for why, item in zip(table["why"], items, strict=True):
        sound, _, genres = why.partition(", shared genres: ")
        assert set(sound.split(", ")) <= {"own sound", "artist's sound"}
        assert genres == ", ".join(item["explanation"]["shared_genres"])
    assert any(why for why in table["why"])
    assert table["spotify"].str.startswith("https://open.spotify.com/track/").all()
    assert list(table["distance"]) == sorted(table["distance"])
    assert len(at.get("vega_lite_chart")) == 2  # the feature plot and the cluster map
    # Not signed in: saving asks to sign in first.
    assert "Sign in with Spotify to save this playlist" in page_text(at)
    # Removing a favourite updates the list.
    at.button(key=f"remove_{seeds[0]}").click().run()
    assert [s["track_id"] for s in at.session_state[state.SEEDS]] == seeds[1:]


def test_signed_in_listener_profile_favourite_and_save_playlist(
    dashboard_stack, dashboard_env
) -> None:
    cookie = dashboard_stack.sign_in("demo")
    at = new_app(cookie).run()
    assert not at.exception and not at.error
    text = page_text(at)
    assert "signed in with Spotify" in text
    assert "Latest added" in text
    top = next(m.value for m in at.markdown if "emergify-top-artists" in m.value)
    assert top.count("background:url(") == 10  # ten artists, each with Spotify's image
    assert at.button(key="sign_out")  # a POST button, not a link

    at.button(key="random_favourite").click().run()
    assert not at.error
    favourite = at.session_state[state.SEEDS]
    assert len(favourite) == 1
    liked = at.multiselect(key="liked_pick")
    assert liked.options  # the demo listener likes songs the catalog knows
    liked.set_value(liked.options[:2]).run()
    at.button(key="add_liked").click().run()
    assert 2 <= len(at.session_state[state.SEEDS]) <= 3

    at.button(key="recommend").click().run()
    picks = [i["track_id"] for i in at.session_state[state.RESULTS]["items"]]
    assert picks
    at.text_input(key="playlist_name").input("Emergify AppTest").run()
    at.button(key="save_playlist").click().run()
    assert not at.error, [e.value for e in at.error]
    created = at.session_state[state.PLAYLIST]
    assert created["added"] == len(picks)
    assert "Saved “Emergify AppTest”" in shown(at.success[0].value)
    assert link_buttons(at)["Open the playlist in Spotify"] == created["url"]
    saved = [p for p in dashboard_stack.sandbox_playlists("demo") if p["id"] == created["id"]]
    assert saved and saved[0]["name"] == "Emergify AppTest"

    # Pressing Save again (same name and songs) does not make a second playlist.
    at.button(key="save_playlist").click().run()
    assert at.session_state[state.PLAYLIST]["id"] == created["id"]
    assert (
        len(
            [
                p
                for p in dashboard_stack.sandbox_playlists("demo")
                if p["name"] == "Emergify AppTest"
            ]
        )
        == 1
    )


def test_an_invalid_session_cookie_shows_sign_in_again(dashboard_stack, dashboard_env) -> None:
    at = new_app("bm9ib2R5.1.forged").run()
    assert not at.exception
    assert "Sign in with Spotify" in link_buttons(at)
    # The spotify-gateway answers a forged cookie 401: "expired", not a failure.
    assert not at.error, [e.value for e in at.error]
    assert "Your Spotify sign-in has expired; sign in again." in [i.value for i in at.info]


def test_csv_upload_reports_accepted_and_rejected_rows(
    dashboard_stack, dashboard_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Uploads turned on, and a listener signed in: the gateway lets the dashboard upload.
    monkeypatch.setenv("EMERGIFY_DASHBOARD_UPLOADS", "true")
    at = new_app(dashboard_stack.sign_in()).run()
    at.file_uploader(key="upload_file").upload("mine.csv", GOOD_ROW.encode(), "text/csv")
    at.run()
    at.button(key="upload").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    answer = at.session_state[state.UPLOAD]
    assert answer["accepted"] == 1
    assert "1 songs accepted, 1 rows rejected" in shown(at.warning[0].value)
    rejected = at.dataframe[0].value
    assert list(rejected["row"]) == [2]
    assert "danceability" in rejected["errors"][0] and "1.7" in rejected["errors"][0]


def test_api_errors_are_readable_messages_not_tracebacks(
    dashboard_stack, dashboard_env, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Uploads on, nobody signed in: the viewer must bring a key; a read-only one may browse
    # but not upload, and the gateway's 403 detail is shown.
    monkeypatch.setenv("EMERGIFY_DASHBOARD_UPLOADS", "true")
    at = new_app().run()
    assert not at.get("file_uploader")
    at.text_input(key="upload_key").input(dashboard_stack.read_key).run()
    at.file_uploader(key="upload_file").upload("mine.csv", GOOD_ROW.encode(), "text/csv")
    at.run()
    at.button(key="upload").click().run()
    assert not at.exception
    assert "Upload failed" in shown(at.error[0].value) and "read-only" in shown(at.error[0].value)

    # Uploads off (the default): no uploader at all, signed in or not.
    monkeypatch.delenv("EMERGIFY_DASHBOARD_UPLOADS")
    at = new_app(dashboard_stack.sign_in()).run()
    assert not at.get("file_uploader")
    at = new_app().run()
    assert not at.get("file_uploader")
    assert "Uploads are turned off" in page_text(at)

    # A wrong key: every section says so in words.
    monkeypatch.setenv("EMERGIFY_DASHBOARD_API_KEY", "not-a-key")
    at = new_app().run()
    assert not at.exception
    assert any("API key is not valid" in shown(e.value) for e in at.error)

    # No gateway at all.
    monkeypatch.setenv("EMERGIFY_GATEWAY_URL", f"http://127.0.0.1:{free_port()}")
    at = new_app().run()
    assert not at.exception
    assert any("cannot reach the API gateway" in shown(e.value) for e in at.error)


def test_problem_messages_charts_and_times_are_plain_functions() -> None:
    problem = httpx.Response(
        422,
        json={
            "type": "about:blank",
            "title": "Invalid request",
            "status": 422,
            "detail": "seeds: x",
        },
    )
    assert problem_message(problem) == "Invalid request: seeds: x"
    assert problem_message(httpx.Response(502, text="bad gateway")) == "HTTP 502: bad gateway"
    assert ago(None) == "never" and ago(30) == "30 s ago" and ago(600) == "10 min ago"
    assert charts.unit_scale("loudness", -60) == 0.0 and charts.unit_scale("tempo", 500) == 1.0
    seed = {f: 0.5 for f in charts.AUDIO_FEATURES}
    item = {"name": "x", "features": seed, "track_id": "a" * 22}
    frame = charts.features_frame(seed, [item])
    assert set(frame["who"]) == {"favourite", "recommended"} and len(frame) == 18
    clusters = {"points": [{"x": 0, "y": 1, "cluster": 2, "name": "x", "track_id": "a" * 22}]}
    mapped = charts.cluster_frame(clusters, ["a" * 22], [])
    assert list(mapped["role"]) == ["favourite"]
    assert charts.missing_from_map(mapped, ["a" * 22], ["b" * 22]) == 1
    shared = {"reasons": ["own sound", "shared genres"], "shared_genres": ["lo-fi", "indie"]}
    assert charts.why_text(shared) == "own sound, shared genres: lo-fi, indie"
    assert charts.why_text({"reasons": ["artist's sound", "own sound"]}) == (
        "artist's sound, own sound"
    )
    row = {**item, "artists": ["a"], "distance": 1.0, "spotify_url": "u", "explanation": shared}
    assert list(charts.playlist_frame([{**row, "genres": ["lo-fi", "indie"]}])["genres"]) == [
        "lo-fi, indie"
    ]
    assert list(charts.playlist_frame([row])["genres"]) == [""]  # an answer without genres


EVIL_SONG = "[x](http://evil) ![i](http://evil/i.png)"
EVIL_ARTIST = "![i](http://evil/a.png) www.evil.example"
EVIL_ERROR = "[sign in again](http://evil/phish)"


def _rendered_markdown(at: AppTest) -> list[str]:
    """Every element Streamlit renders as markdown, as the HTML a CommonMark renderer makes."""
    renderer = MarkdownIt("commonmark")
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    for kind in ("error", "warning", "info", "success", "toast"):
        parts += [e.value for e in at.get(kind)]
    return [renderer.render(str(part)) for part in parts]


def test_song_artist_and_error_texts_are_never_links_or_images(
    dashboard_stack, dashboard_env
) -> None:
    at = new_app()
    at.query_params["spotify_error"] = EVIL_ERROR
    at.session_state[state.SEEDS] = [
        {"track_id": "[x](http://evil)", "name": EVIL_SONG, "artists": [EVIL_ARTIST]}
    ]
    at.run()
    at.button(key="recommend").click().run()  # the recommender's problem names the bad seed
    assert not at.exception
    html = "\n".join(_rendered_markdown(at))
    assert "<a " not in html and "<img" not in html
    # A bare URL would become a link in GitHub-flavoured markdown (Streamlit's): none is left.
    sources = [m.value for m in at.markdown] + [e.value for e in [*at.error, *at.warning]]
    assert not any("http://" in s or "www.evil" in s for s in sources)
    # The texts are still shown, character for character.
    assert EVIL_SONG in html and EVIL_ARTIST in html and EVIL_ERROR in html
    assert any("Could not get recommendations" in e.value for e in at.error)


def test_sign_out_posts_and_the_cookie_stops_working(dashboard_stack, dashboard_env) -> None:
    cookie = dashboard_stack.sign_in("demo")
    at = new_app(cookie).run()
    assert "signed in with Spotify" in page_text(at)
    at.button(key="sign_out").click().run()
    assert not at.exception and not at.error
    assert "Sign in with Spotify" in link_buttons(at)
    refused = httpx.get(
        f"{dashboard_stack.gateway.url}/api/v1/catalog", cookies={"emergify_session": cookie}
    )
    assert refused.status_code == 401
