"""Tables of the spotify-gateway, on the shared ``metadata`` (so ``create_tables`` makes them).

Tokens are stored encrypted (Fernet, ``EMERGIFY_TOKEN_ENCRYPTION_KEY``); these definitions only
say where they live. Times are unix seconds, which SQLite and PostgreSQL compare alike.
"""

from __future__ import annotations

import sqlalchemy as sa

from emergify_contracts.tables import metadata

#: One row per signed-in listener (Spotify user id): their tokens, encrypted at rest.
spotify_tokens = sa.Table(
    "spotify_tokens",
    metadata,
    sa.Column("listener_id", sa.String(255), primary_key=True, doc="Spotify user id."),
    sa.Column("refresh_token", sa.Text, nullable=False, doc="Fernet ciphertext."),
    sa.Column("access_token", sa.Text, nullable=False, doc="Fernet ciphertext."),
    sa.Column("expires_at", sa.BigInteger, nullable=False, doc="Access token expiry, unix s."),
    sa.Column("scopes", sa.Text, nullable=False, doc="Granted scopes, space-separated."),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)

#: Sign-ins in progress: the one-time ``state`` and its PKCE verifier, deleted on use.
oauth_states = sa.Table(
    "oauth_states",
    metadata,
    sa.Column("state", sa.String(128), primary_key=True),
    sa.Column("code_verifier", sa.Text, nullable=False, doc="Fernet ciphertext."),
    sa.Column("expires_at", sa.BigInteger, nullable=False, doc="Unix s; 10 minutes after login."),
)
sa.Index("ix_oauth_states_expires_at", oauth_states.c.expires_at)

#: Playlist exports made with an ``Idempotency-Key``: a retry answers the first result.
idempotent_playlists = sa.Table(
    "idempotent_playlists",
    metadata,
    sa.Column("listener_id", sa.String(255), primary_key=True),
    sa.Column("idempotency_key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False, doc="SHA-256 of the request body."),
    sa.Column("status", sa.String(16), nullable=False, doc="pending | failed | done"),
    sa.Column("playlist_id", sa.String(64), doc="Set once the playlist exists (resume point)."),
    sa.Column("added", sa.Integer, nullable=False, doc="Tracks added so far."),
    sa.Column("result", sa.JSON, doc="The 201 body, once done."),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.BigInteger, nullable=False),
)
