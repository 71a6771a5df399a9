"""Names of what the dashboard keeps in ``st.session_state`` between reruns, in one place."""

from __future__ import annotations

#: Chosen favourites: list of ``{"track_id", "name", "artists"}``.
SEEDS = "seeds"
#: The last recommendation answer (the gateway's JSON).
RESULTS = "results"
#: The last playlist saved to Spotify: ``{id, url, added, name}``.
PLAYLIST = "playlist"
#: The listener's profile, latest added song and top artists, cached per session cookie.
LISTENER = "listener"
#: This browser session's viewer id (its own rate-limit bucket at the gateway).
VIEWER = "viewer_id"
#: The last CSV upload's answer: ``{upload_id, accepted, rejected}``.
UPLOAD = "upload_result"
#: The Spotify session cookie when ``st.context.cookies`` has none: AppTest cannot send
#: cookies, so tests sign in through the gateway and put the cookie here.
SESSION_COOKIE_OVERRIDE = "session_cookie"
#: The session cookie this browser signed out with: the browser may still send it (revoked).
SIGNED_OUT_COOKIE = "signed_out_cookie"
#: What the last feedback button did, shown once above the list: ``{kind, text}``.
FEEDBACK_NOTICE = "feedback_notice"
#: Song names by track id, looked up once (seeds of "for me", living-playlist songs).
SONG_NAMES = "song_names"
#: The listener's Spotify playlists for the expand picker, once loaded: ``{cookie, items}``.
MY_PLAYLISTS = "my_playlists"
#: The listener's living playlists, once loaded: ``{cookie, items}``.
LIVING = "living_playlists"
#: The last living-playlist action's message: ``{kind, text}``.
LIVING_NOTICE = "living_notice"
#: What Emergify keeps about the listener, once asked: the gateway's ``{items, count}``.
MY_FEEDBACK = "my_feedback"
#: The last erase's answer (the 202's ``{event_id, ...}``).
ERASED = "erased"
