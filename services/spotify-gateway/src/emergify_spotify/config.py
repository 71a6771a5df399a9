"""Settings of the spotify-gateway service (environment prefix ``EMERGIFY_``)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet
from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator

from emergify_contracts.session import PLACEHOLDER, SessionSettings
from emergify_spotify.sandbox.config import SandboxSettings

#: What Emergify asks the listener for: liked songs, top artists, and writing playlists.
SCOPES = (
    "user-library-read user-top-read playlist-read-private playlist-modify-private "
    "playlist-modify-public"
)


class Settings(SessionSettings):
    """Everything the spotify-gateway needs; every field is an ``EMERGIFY_*`` variable."""

    spotify_client_id: str | None = Field(None, description="Client ID of your Spotify app.")
    spotify_client_secret: SecretStr | None = Field(
        None, description="Client secret of your Spotify app."
    )
    spotify_redirect_uri: str = Field(
        "http://127.0.0.1:8080/api/v1/spotify/callback",
        description="Redirect URI registered with the Spotify app (a loopback IP, not localhost).",
    )
    spotify_accounts_url: str = Field(
        "https://accounts.spotify.com", description="Spotify accounts service (or the sandbox)."
    )
    spotify_api_url: str = Field(
        "https://api.spotify.com/v1", description="Spotify Web API base (or the sandbox's /v1)."
    )
    spotify_sandbox: bool | None = Field(
        None,
        description="Offline demo: talk to the Spotify sandbox at EMERGIFY_SPOTIFY_SANDBOX_URL "
        "with its demo app credentials, whatever the other spotify_* settings say. Unset: the "
        "sandbox only when no real Spotify app (client id and secret) is configured.",
    )
    token_encryption_key: SecretStr | None = Field(
        None,
        description="Fernet key(s) encrypting tokens at rest; comma-separated for rotation "
        "(the first encrypts). `emergify up` generates one.",
    )
    dashboard_url: str = Field(
        "http://127.0.0.1:8501", description="Where the listener lands after signing in or out."
    )
    max_retry_after_seconds: float = Field(
        30.0,
        ge=0,
        description="Longest Spotify Retry-After waited out within one request; longer waits "
        "answer 503 with the Retry-After instead.",
    )
    spotify_max_attempts: int = Field(
        4, ge=1, description="Attempts per Spotify call (429 waits and the one 401 refresh)."
    )
    spotify_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of Spotify calls.")
    recommender_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout of catalog look-ups at the recommender."
    )
    liked_scan_limit: int = Field(
        200, ge=1, description="Most liked songs /me/favourite looks through."
    )
    oauth_state_ttl_seconds: int = Field(600, gt=0, description="How long a sign-in may take.")
    taste_max_seeds: int = Field(
        20, ge=1, le=50, description='Most seeds "recommend for me" draws from history.'
    )
    taste_half_life_days: float = Field(
        30.0, gt=0, description="Half-life of a liked song's weight as a taste seed."
    )
    living_sync_enabled: bool = Field(
        True,
        description="Run the living-playlist sync worker and the scheduled refresh in this "
        "process.",
    )
    living_sync_interval_seconds: float = Field(
        30.0,
        gt=0,
        description="How often the sync worker sweeps for living playlists Spotify lags behind "
        "(besides acting on each change event at once).",
    )
    living_refresh_interval_seconds: float = Field(
        86400.0,
        gt=0,
        description="Re-rank each living playlist when its last refresh is older than this "
        "(daily by default; checked every tenth of it, at least every minute).",
    )
    living_sync_group: str = Field(
        "emergify-spotify-living-sync",
        description="Consumer group of the sync worker on the living-playlists topic.",
    )
    # Whether a real app was configured before sandbox mode replaced the credentials.
    _explicit_client_id: bool = PrivateAttr(False)

    @field_validator("token_encryption_key")
    @classmethod
    def _valid_fernet_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() in ("", PLACEHOLDER):
            return None
        for key in value.get_secret_value().split(","):
            try:
                Fernet(key.strip().encode())
            except ValueError:
                raise ValueError(
                    "EMERGIFY_TOKEN_ENCRYPTION_KEY must be Fernet keys (32 url-safe base64 "
                    'bytes), comma-separated; generate one with python -c "from '
                    'cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"'
                ) from None
        return value

    @model_validator(mode="after")
    def _sandbox_mode(self) -> Settings:
        self._explicit_client_id = self.real_app_configured
        if self.spotify_sandbox is None:
            # A configured real app wins; the demo is only the fallback for nothing configured.
            self.spotify_sandbox = not self.real_app_configured
        if self.spotify_sandbox:
            sandbox = SandboxSettings()
            base = sandbox.spotify_sandbox_url.rstrip("/")
            self.spotify_client_id = sandbox.spotify_sandbox_client_id
            self.spotify_client_secret = sandbox.spotify_sandbox_client_secret
            self.spotify_accounts_url = base
            self.spotify_api_url = f"{base}/v1"
        return self

    @property
    def real_app_configured(self) -> bool:
        """Whether a Spotify app's client id and secret are set (sandbox mode aside)."""
        secret = self.spotify_client_secret.get_secret_value() if self.spotify_client_secret else ""
        return bool(self.spotify_client_id and secret.strip())

    def describe_spotify(self) -> str:
        """One line saying which Spotify is in use and why, for `emergify up`."""
        if self.spotify_sandbox:
            return "offline demo (sandbox)" + (
                ": EMERGIFY_SPOTIFY_SANDBOX=true overrides your EMERGIFY_SPOTIFY_CLIENT_ID"
                if self._explicit_client_id
                else ""
            )
        if self.real_app_configured:
            return f"real Spotify ({self.spotify_accounts_url}), client id {self.spotify_client_id}"
        return (
            "not configured: set EMERGIFY_SPOTIFY_CLIENT_ID and _SECRET (Spotify routes answer 503)"
        )

    def missing_settings(self) -> list[str]:
        """The settings without which Spotify sign-in cannot work, by environment name."""
        missing = []
        if not self.spotify_client_id:
            missing.append("EMERGIFY_SPOTIFY_CLIENT_ID")
        if not self.spotify_client_secret or not self.spotify_client_secret.get_secret_value():
            missing.append("EMERGIFY_SPOTIFY_CLIENT_SECRET")
        if self.session_secret is None:
            missing.append("EMERGIFY_SESSION_SECRET")
        if self.token_encryption_key is None:
            missing.append("EMERGIFY_TOKEN_ENCRYPTION_KEY")
        return missing

    @property
    def spotify_configured(self) -> bool:
        """Whether every setting sign-in needs is present."""
        return not self.missing_settings()


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment and ``.env``."""
    return Settings()
