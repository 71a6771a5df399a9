"""A local stand-in for Spotify's accounts service and Web API (tests and the offline demo).

It follows Spotify's documented contract for exactly the endpoints Emergify calls, as of the
February 2026 development-mode changes: field names, paging objects, error bodies, token
expiry and 429s, and 403 for the endpoints Spotify removed. ``python -m emergify_spotify.sandbox``
serves it on ``EMERGIFY_SPOTIFY_SANDBOX_URL``.
"""
