"""Text from outside (song and artist names, error details, URL parameters) shown as text.

Streamlit renders ``st.markdown``, captions, alerts, toasts and progress labels as GitHub-flavoured
markdown: a song named ``[x](http://evil)`` would become a link, ``![i](http://evil/i.png)`` an
image fetched from someone else's server, and a bare ``www.`` or ``http://`` address a link.
:func:`md_text` escapes every markdown punctuation character so the text shows literally.
"""

from __future__ import annotations

import re

# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones that start
# markup (links, images, emphasis, code, HTML, headings, lists, tables, Streamlit's :color[]
# and :emoji: directives) or complete an autolink (':' of 'http://', '.' of 'www.').
_MARKUP = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&])")


def md_text(value: object) -> str:
    """``value`` as markdown that renders as exactly its text (one line)."""
    return _MARKUP.sub(r"\\\1", " ".join(str(value).split()))
