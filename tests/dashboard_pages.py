"""Driving the dashboard with Streamlit's AppTest: a page, what it shows, adding favourites."""

from __future__ import annotations

import html
import re
from pathlib import Path

from markdown_it import MarkdownIt
from streamlit.testing.v1 import AppTest

import emergify_dashboard
from emergify_dashboard import state

APP = Path(emergify_dashboard.__file__).with_name("app.py")
TIMEOUT = 60


def new_app(cookie: str | None = None) -> AppTest:
    """A fresh browser session of the dashboard, signed in with ``cookie`` if given."""
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if cookie:
        at.session_state[state.SESSION_COOKIE_OVERRIDE] = cookie
    return at


def shown(markdown: object) -> str:
    """The text a markdown element shows (escapes resolved, tags dropped)."""
    rendered = MarkdownIt("commonmark").render(str(markdown))
    return html.unescape(re.sub(r"<[^>]+>", "", rendered)).strip()


def page_text(at: AppTest) -> str:
    """Every piece of text the page shows, joined (for 'the page says ...' checks)."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    for kind in ("error", "warning", "info", "success"):
        parts += [e.value for e in getattr(at, kind)]
    return "\n".join(shown(p) for p in parts)


def add_search_seeds(at: AppTest, query: str, how_many: int) -> list[str]:
    """Search the catalog and add the first ``how_many`` hits as favourites."""
    at.text_input(key="search_q").input(query).run()
    hits = at.multiselect(key="search_pick")
    assert len(hits.options) >= how_many, hits.options
    hits.set_value(hits.options[:how_many]).run()
    at.button(key="add_search").click().run()
    return [s["track_id"] for s in at.session_state[state.SEEDS]]
