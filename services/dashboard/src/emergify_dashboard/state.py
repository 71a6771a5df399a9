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
#: The last CSV upload's answer: ``{upload_id, accepted, rejected}``.
UPLOAD = "upload_result"
#: The Spotify session cookie when ``st.context.cookies`` has none: AppTest cannot send
#: cookies, so tests sign in through the gateway and put the cookie here.
SESSION_COOKIE_OVERRIDE = "session_cookie"
#: The session cookie this browser signed out with: the browser may still send it (revoked).
SIGNED_OUT_COOKIE = "signed_out_cookie"
