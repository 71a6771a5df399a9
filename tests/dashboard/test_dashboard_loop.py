"""The listener loop on the dashboard (feedback buttons, taste, expand, living playlists, what
Emergify keeps), driven by Streamlit's AppTest against the real API gateway.

Feedback and erase go through the gateway to the ingest service and land on the embedded
broker's feedback topic, where the tests read them back; playlists, "for me", expand and
living playlists are answered by the real spotify-gateway (the sandbox behind it) and the
recommender.
"""

from __future__ import annotations

import copy

import httpx
from dashboard_pages import add_search_seeds, new_app, page_text, shown
from kafka_io import consume
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from emergify_contracts.listener import FeedbackEvent
from emergify_dashboard import state
from emergify_dashboard.views.feedback import apply_feedback

ROAD_TRIP = "demoroadtrip000000000a"  # a sandbox playlist of the demo listener
EVIL_SONG = "[x](http://evil) ![i](http://evil/i.png)"
EVIL_ARTIST = "![a](http://evil/a.png) www.evil.example"


def feedback_events(stack, expected: int) -> list[tuple[str, FeedbackEvent]]:
    """Every record of the dashboard stack's feedback topic: (key, event)."""
    records = consume(stack.bootstrap, stack.feedback_topic, expected)
    return [(r.key.decode(), FeedbackEvent.model_validate_json(r.value)) for r in records]


def rendered_html(at: AppTest) -> str:
    """Every markdown-rendered element of the page as CommonMark HTML (but the top-artists
    cards: HTML the page builds itself, with links to Spotify's artist pages)."""
    renderer = MarkdownIt("commonmark")
    parts = [m.value for m in at.markdown if "emergify-top-artists" not in m.value]
    parts += [c.value for c in at.caption]
    for kind in ("error", "warning", "info", "success", "toast"):
        parts += [e.value for e in at.get(kind)]
    return "\n".join(renderer.render(str(p)) for p in parts)


def signed_in_with_results(stack) -> AppTest:
    """A signed-in page showing recommendations for two catalog favourites."""
    at = new_app(stack.sign_in("demo")).run()
    add_search_seeds(at, "love", 2)
    at.slider(key="limit").set_value(20)
    at.number_input(key="max_per_artist").set_value(3)
    at.button(key="recommend").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_apply_feedback_removes_the_disliked_song_or_every_song_of_a_banned_artist() -> None:
    items = [
        {"track_id": "a", "artists": ["Ann", "Bo"]},
        {"track_id": "b", "artists": [" ann "]},
        {"track_id": "c", "artists": ["Cy"]},
    ]
    assert apply_feedback(items, items[2], "like") == [] and len(items) == 3
    assert apply_feedback(items, items[2], "dislike") == ["c"]
    assert [i["track_id"] for i in items] == ["a", "b"]
    assert apply_feedback(items, {"track_id": "z", "artists": ["ANN"]}, "ban_artist") == [
        "a",
        "b",
    ]
    assert items == []


def test_feedback_buttons_send_events_and_dislike_and_ban_leave_the_list(
    dashboard_stack, dashboard_env
) -> None:
    at = signed_in_with_results(dashboard_stack)
    items = copy.deepcopy(at.session_state[state.RESULTS]["items"])
    assert len(items) >= 4
    for item in items:  # three buttons on every recommended song
        for signal in ("like", "dislike", "ban_artist"):
            assert at.button(key=f"{signal}_{item['track_id']}")

    liked, disliked = items[0], items[1]
    at.button(key=f"like_{liked['track_id']}").click().run()
    assert not at.error, [e.value for e in at.error]
    assert "Liked" in shown(at.success[0].value) and "becomes a seed" in shown(at.success[0].value)
    assert len(at.session_state[state.RESULTS]["items"]) == len(items)  # a like keeps it

    at.button(key=f"dislike_{disliked['track_id']}").click().run()
    assert not at.error, [e.value for e in at.error]
    remaining = copy.deepcopy(at.session_state[state.RESULTS]["items"])
    assert disliked["track_id"] not in {i["track_id"] for i in remaining}
    assert len(remaining) == len(items) - 1
    said = shown(at.success[0].value)
    assert said.startswith("Disliked") and disliked["name"] in said
    assert "removed from this list" in said
    table = next(d.value for d in at.dataframe if "spotify" in d.value.columns)
    assert disliked["track_id"] not in set(table["spotify"].str[-22:])

    banned = remaining[0]
    banned_artists = {a.casefold() for a in banned["artists"]}
    at.button(key=f"ban_artist_{banned['track_id']}").click().run()
    assert not at.error, [e.value for e in at.error]
    after = at.session_state[state.RESULTS]["items"]
    assert not any({a.casefold() for a in i["artists"]} & banned_artists for i in after)
    gone = len(remaining) - len(after)
    assert gone >= 1 and f"removed {gone} of their songs" in shown(at.success[0].value)
    assert not [b for b in at.button if b.key == f"dislike_{banned['track_id']}"]

    events = feedback_events(dashboard_stack, 3)
    mine = [(k, e) for k, e in events if e.track_id in {i["track_id"] for i in items}]
    assert [(e.signal.value, e.track_id) for _, e in mine][-3:] == [
        ("like", liked["track_id"]),
        ("dislike", disliked["track_id"]),
        ("ban_artist", banned["track_id"]),
    ]
    # The listener came from the forwarded session, not from anything the dashboard sent.
    assert {k for k, _ in mine} == {e.listener_id for _, e in mine}
    assert all(k.startswith("spotify:") for k, _ in mine)


def test_song_names_in_feedback_rows_and_messages_stay_text(dashboard_stack, dashboard_env) -> None:
    at = signed_in_with_results(dashboard_stack)
    results = at.session_state[state.RESULTS]
    evil = results["items"][0]
    evil["name"], evil["artists"] = EVIL_SONG, [EVIL_ARTIST]
    # An answer that names its seeds (as "for me" and expand do): names come from the catalog.
    seed_id = results["seed"]["track_ids"][0]
    results["seeds_used"] = [{"track_id": seed_id, "weight": 0.7, "why": EVIL_SONG}]
    at.run()
    assert not at.exception and not at.error
    seeds_table = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert list(seeds_table["song"]) == [dashboard_stack.catalog[seed_id]["name"]]
    assert list(seeds_table["why"]) == [EVIL_SONG]  # a cell: text, never markdown

    at.button(key=f"dislike_{evil['track_id']}").click().run()
    assert not at.exception and not at.error
    html = rendered_html(at)
    assert "<a " not in html and "<img" not in html
    assert not any(
        "http://" in m.value or "www.evil" in m.value for m in [*at.markdown, *at.success]
    )
    assert EVIL_SONG in shown(at.success[0].value)  # still shown, character for character
    assert evil["track_id"] not in {i["track_id"] for i in at.session_state[state.RESULTS]["items"]}


def test_anonymous_viewers_get_no_feedback_buttons_and_are_asked_to_sign_in(
    dashboard_stack, dashboard_env
) -> None:
    at = new_app().run()
    add_search_seeds(at, "love", 1)
    at.button(key="recommend").click().run()
    assert at.session_state[state.RESULTS]["items"]
    assert not [b for b in at.button if b.key and b.key.startswith(("like_", "dislike_"))]
    assert not [b for b in at.button if b.key in ("recommend_for_me", "load_playlists")]
    text = page_text(at)
    assert "Sign in with Spotify to keep living playlists" in text
    assert "Sign in with Spotify to see and erase" in text


def test_erase_what_emergify_keeps_publishes_an_erase_for_the_listener(
    dashboard_stack, dashboard_env
) -> None:
    cookie = dashboard_stack.sign_in("demo")
    at = new_app(cookie).run()
    assert at.button(key="erase_feedback").disabled  # not before the listener confirms
    at.checkbox(key="erase_sure").check().run()
    at.button(key="erase_feedback").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    receipt = at.session_state[state.ERASED]
    assert any("Erased" in shown(s.value) for s in at.success)
    erases = [
        (k, e) for k, e in feedback_events(dashboard_stack, 1) if e.event_id == receipt["event_id"]
    ]
    assert len(erases) == 1
    key, event = erases[0]
    assert event.signal.value == "erase" and event.track_id is None
    assert key == event.listener_id == receipt["listener_id"]

    # The list of what is kept: shown where the gateway offers it, else said so in words.
    at.button(key="show_feedback").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    kept = at.session_state[state.MY_FEEDBACK]
    assert kept["count"] == len(kept["items"])
    assert "feedback events kept" in page_text(at)


def test_recommend_for_me_shows_the_seeds_used_and_why(dashboard_stack, dashboard_env) -> None:
    cookie = dashboard_stack.sign_in("demo")
    at = new_app(cookie).run()
    at.slider(key="limit").set_value(10)
    at.button(key="recommend_for_me").click().run()
    assert not at.exception
    # The same question straight to the gateway answers (the page shows that answer).
    direct = httpx.post(
        f"{dashboard_stack.gateway.url}/api/v1/spotify/recommendations/for-me",
        json={"limit": 10, "max_popularity": 30, "max_per_artist": 2, "include_recent": False},
        cookies={"emergify_session": cookie},
        headers={"X-API-Key": dashboard_stack.dashboard_key},
        timeout=60,
    )
    assert direct.status_code == 200, direct.text
    assert not at.error, [e.value for e in at.error]
    results = at.session_state[state.RESULTS]
    assert results["source"] == "taste" and 0 < len(results["items"]) <= 10
    seeds_used = results["seeds_used"]
    assert seeds_used and all(s["track_id"] in dashboard_stack.catalog for s in seeds_used)
    table = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert list(table["song"]) == [
        dashboard_stack.catalog[s["track_id"]]["name"] for s in seeds_used
    ]
    assert list(table["why"]) == [s["why"] for s in seeds_used]
    assert "for you, from your Spotify history" in page_text(at)
    assert at.button(key=f"dislike_{results['items'][0]['track_id']}")


def _pick_road_trip(at: AppTest) -> None:
    at.button(key="load_playlists").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    picker = at.selectbox(key="expand_playlist")
    # Options show as "name (n songs, k in the catalog)": plain text, counted by the gateway.
    assert any(o.startswith("Road trip (") and "in the catalog)" in o for o in picker.options)
    picker.set_value(ROAD_TRIP).run()
    assert at.selectbox(key="expand_playlist").value == ROAD_TRIP


def test_expand_a_playlist_by_count_or_within_a_distance(dashboard_stack, dashboard_env) -> None:
    at = new_app(dashboard_stack.sign_in("demo")).run()
    _pick_road_trip(at)
    in_playlist = next(
        set(p["track_ids"]) for p in dashboard_stack.sandbox_playlists() if p["id"] == ROAD_TRIP
    )
    at.slider(key="limit").set_value(8)
    at.button(key="expand").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    counted = at.session_state[state.RESULTS]
    assert counted["source"] == "expand" and len(counted["items"]) == 8
    assert not {i["track_id"] for i in counted["items"]} & in_playlist
    assert "to expand your playlist" in page_text(at)
    assert at.text_input(key="playlist_name").value == "Emergify · more like Road trip"

    # Twice the furthest counted song's distance: songs beyond those eight (which the
    # recommender now counts as recently recommended to this listener) fall within it.
    threshold = round(2 * counted["items"][-1]["distance"], 3)
    at.radio(key="expand_mode").set_value("Every song within a distance").run()
    at.number_input(key="expand_within").set_value(threshold).run()
    at.number_input(key="expand_cap").set_value(60).run()
    at.button(key="expand").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    within = at.session_state[state.RESULTS]["items"]
    assert within and all(i["distance"] <= threshold for i in within)
    assert not {i["track_id"] for i in within} & in_playlist


def test_living_playlist_create_see_refresh_and_stop(dashboard_stack, dashboard_env) -> None:
    at = new_app(dashboard_stack.sign_in("demo")).run()
    assert at.button(key="living_create").disabled  # no favourites chosen yet
    add_search_seeds(at, "love", 2)
    at.text_input(key="living_name").input("Dash [x](http://evil)").run()
    at.slider(key="living_size").set_value(10).run()
    at.button(key="living_create").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any(
        "Created “Dash [x](http://evil)” with 10 songs" in shown(s.value) for s in at.success
    )
    assert "<a " not in rendered_html(at)

    listed = next(d.value for d in at.dataframe if "songs added" in d.value.columns)
    assert list(listed["name"]) == ["Dash [x](http://evil)"] and list(listed["state"]) == ["living"]
    songs = next(d.value for d in at.dataframe if "added" in d.value.columns)
    assert len(songs) == 10 and songs["added"].str.endswith("UTC").all()
    names = {s["name"] for s in dashboard_stack.catalog.values()}
    assert set(songs["song"]) <= names
    living = at.session_state[state.LIVING]["items"][0]
    spotify = next(
        p for p in dashboard_stack.sandbox_playlists() if p["id"] == living["spotify_playlist_id"]
    )
    assert len(spotify["track_ids"]) == 10  # written to Spotify at once

    at.button(key="living_refresh").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Refreshed “Dash [x](http://evil)”" in shown(s.value) for s in at.success)
    assert at.session_state[state.LIVING]["items"][0]["last_refresh"]

    at.button(key="living_stop").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Stopped “Dash [x](http://evil)”" in shown(i.value) for i in at.info)
    listed = next(d.value for d in at.dataframe if "songs added" in d.value.columns)
    assert list(listed["state"]) == ["stopped"]
    assert at.button(key="living_refresh").disabled and at.button(key="living_stop").disabled


def test_a_living_playlist_from_taste(dashboard_stack, dashboard_env) -> None:
    cookie = dashboard_stack.sign_in("demo2")
    at = new_app(cookie).run()
    at.radio(key="living_source").set_value("My taste (Spotify history)").run()
    assert not at.button(key="living_create").disabled  # no favourites needed
    at.text_input(key="living_name").input("Taste living").run()
    at.button(key="living_create").click().run()
    assert not at.exception
    # Taste seeds carry recency weights, which the recommender accepts (as for-me).
    taste = httpx.post(
        f"{dashboard_stack.gateway.url}/api/v1/spotify/recommendations/for-me",
        json={"limit": 5},
        cookies={"emergify_session": cookie},
        headers={"X-API-Key": dashboard_stack.dashboard_key},
        timeout=60,
    )
    assert taste.status_code == 200, taste.text
    assert not at.error, [e.value for e in at.error]
    assert any("Created “Taste living”" in shown(s.value) for s in at.success)
    assert at.session_state[state.LIVING]["items"][0]["taste"] is True
