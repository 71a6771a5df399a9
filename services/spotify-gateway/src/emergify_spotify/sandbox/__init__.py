"""A local stand-in for Spotify's accounts service and Web API (tests and the offline demo).

``python -m emergify_spotify.sandbox`` serves it on ``EMERGIFY_SPOTIFY_SANDBOX_URL``. What it
follows of Spotify's contract, its layout and how to add an endpoint: docs/spotify-sandbox.md.
"""
