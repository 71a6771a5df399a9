"""The listener loop on the dashboard (feedback buttons, taste, expand, living playlists, what
Emergify keeps), driven by Streamlit's AppTest against the real API gateway.

Feedback and erase go through the gateway to the ingest service and land on the embedded
broker's feedback topic, where the tests read them back. Routes a server may not offer yet
(the listener's feedback list, playlists, "for me", living playlists) are probed through the
gateway first: where they answer, the page must show their data; where they do not, the page
must say so in words and keep working.
"""

from __future__ import annotations

import copy
from typing import Any

import httpx
import pytest
from dashboard_pages import add_search_seeds, new_app, page_text, shown
from kafka_io import consume
from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

from emergify_contracts.listener import FeedbackEvent
from emergify_dashboard import state
from emergify_dashboard.views.feedback import apply_feedback

EVIL_SONG = "[x](http://evil) ![i](http://evil/i.png)"
EVIL_ARTIST = "![a](http://evil/a.png) www.evil.example"


def feedback_events(stack, expected: int) -> list[tuple[str, FeedbackEvent]]:
    """Every record of the dashboard stack's feedback topic: (key, event)."""
    records = consume(stack.bootstrap, stack.feedback_topic, expected)
    return [(r.key.decode(), FeedbackEvent.model_validate_json(r.value)) for r in records]


def gateway_answers(stack, cookie: str, method: str, path: str, **kwargs: Any) -> bool:
    """Whether the gateway (and the service behind it) offers ``method path`` to a listener."""
    response = httpx.request(
        method,
        f"{stack.gateway.url}{path}",
        cookies={"emergify_session": cookie},
        headers={"X-API-Key": stack.dashboard_key},
        timeout=60,
        **kwargs,
    )
    return response.status_code not in (404, 405, 501)


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
    assert disliked["track_id"] not in set(at.dataframe[0].value["spotify"].str[-22:])

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
    if gateway_answers(dashboard_stack, cookie, "GET", "/api/v1/listeners/me/feedback"):
        kept = at.session_state[state.MY_FEEDBACK]
        assert kept["count"] == len(kept["items"])
    else:
        assert "does not offer it yet" in page_text(at)


def test_loop_routes_the_server_lacks_are_said_in_words_and_live_ones_are_shown(
    dashboard_stack, dashboard_env
) -> None:
    cookie = dashboard_stack.sign_in("demo")
    at = new_app(cookie).run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    # Living playlists: listed on their tab.
    if gateway_answers(dashboard_stack, cookie, "GET", "/api/v1/spotify/living-playlists"):
        assert state.LIVING in at.session_state
    else:
        assert "Could not load your living playlists: this Emergify server does not offer" in (
            page_text(at)
        )

    # The expand picker: the listener's playlists, on request.
    at.button(key="load_playlists").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    if gateway_answers(dashboard_stack, cookie, "GET", "/api/v1/spotify/me/playlists"):
        picker = at.selectbox(key="expand_playlist")
        sandbox_ids = {p["id"] for p in dashboard_stack.sandbox_playlists("demo")}
        assert set(picker.options) <= sandbox_ids
        at.radio(key="expand_mode").set_value("Every song within a distance").run()
        assert at.number_input(key="expand_within").value == 3.0
    else:
        assert "Could not load your Spotify playlists: this Emergify server" in page_text(at)

    # Recommend for me: an answer with seeds, or a readable refusal.
    at.button(key="recommend_for_me").click().run()
    assert not at.exception
    # AppTest's session state has no .get()
    results = at.session_state[state.RESULTS] if state.RESULTS in at.session_state else None  # noqa: SIM401
    if results:
        assert results["source"] == "taste" and results["seeds_used"]
        assert any("why" in d.value.columns for d in at.dataframe)
    else:
        assert any("Could not recommend from your Spotify history" in e.value for e in at.error)


@pytest.mark.parametrize("source", ["favourites", "taste"])
def test_living_playlist_create_needs_favourites_or_taste(
    dashboard_stack, dashboard_env, source: str
) -> None:
    at = new_app(dashboard_stack.sign_in("demo")).run()
    if source == "favourites":
        assert at.button(key="living_create").disabled  # no favourites chosen yet
        add_search_seeds(at, "love", 2)
        assert not at.button(key="living_create").disabled
    else:
        at.radio(key="living_source").set_value("My taste (Spotify history)").run()
        assert not at.button(key="living_create").disabled
    at.button(key="living_create").click().run()
    assert not at.exception
    said = page_text(at)
    # Created (and listed), or the gateway's refusal as a sentence: never a traceback.
    assert "Created “Emergify · living”" in said or any(
        "Could not create the living playlist" in e.value for e in at.error
    )
