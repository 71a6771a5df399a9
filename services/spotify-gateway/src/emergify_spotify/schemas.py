"""Request and response bodies of the spotify-gateway (pydantic, documented in OpenAPI)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from emergify_contracts.song import TRACK_ID_RE


class Health(BaseModel):
    status: Literal["ok", "starting", "degraded"]
    service: str = "spotify-gateway"
    spotify_configured: bool = Field(description="Whether every sign-in setting is present.")
    missing_settings: list[str] = Field(
        default_factory=list, description="Settings to set for Spotify sign-in to work."
    )
    sandbox: bool = Field(False, description="Talking to the offline Spotify sandbox.")
    detail: str | None = None


class Image(BaseModel):
    url: str = Field(description="Image URL (Spotify's CDN).")
    height: int | None = None
    width: int | None = None


class Profile(BaseModel):
    """The signed-in listener."""

    id: str = Field(description="Spotify user id.")
    display_name: str | None = Field(description="Name shown on Spotify.")
    images: list[Image] = Field(description="Profile pictures, largest first.")


class Artist(BaseModel):
    id: str = Field(description="Spotify artist id.")
    name: str
    genres: list[str] = Field(description="Genres Spotify gives the artist (may be empty).")
    images: list[Image]
    spotify_url: str | None = Field(description="The artist's page on open.spotify.com.")


class TopArtists(BaseModel):
    items: list[Artist] = Field(description="Most listened first.")
    time_range: str


class LikedSong(BaseModel):
    id: str = Field(description="Spotify track id.")
    name: str
    artists: list[str] = Field(description="Artist names.")
    album: str | None
    added_at: datetime = Field(description="When the listener liked it.")
    spotify_url: str | None
    in_catalog: bool | None = Field(
        description="Whether Emergify's catalog knows the song (null: the catalog did not answer)."
    )


class LikedSongs(BaseModel):
    items: list[LikedSong] = Field(description="Newest liked first.")
    total: int = Field(description="All liked songs of the listener.")
    offset: int
    catalog_available: bool = Field(description="False when in_catalog could not be checked.")


class LatestAdded(BaseModel):
    song: LikedSong = Field(description="The newest liked song.")


class AudioFeatures(BaseModel):
    danceability: float
    energy: float
    loudness: float
    speechiness: float
    acousticness: float
    instrumentalness: float
    liveness: float
    valence: float
    tempo: float


class Favourite(BaseModel):
    """A random liked song with its audio features, ready to seed recommendations."""

    song: LikedSong
    features: AudioFeatures
    source: Literal["catalog", "spotify"] = Field(
        description="Where the features come from: Emergify's catalog, or Spotify's "
        "/audio-features (only apps with extended quota get those)."
    )
    cluster: int | None = Field(None, description="The song's cluster in the catalog.")


class PlaylistRequest(BaseModel):
    name: str = Field(min_length=1, max_length=200, description="Playlist name.")
    description: str = Field("", max_length=300, description="Playlist description.")
    public: bool = Field(False, description="Public on the listener's profile.")
    track_ids: list[str] = Field(
        max_length=10_000,
        description="Spotify track ids in playlist order; repeats are added once.",
    )

    @field_validator("track_ids")
    @classmethod
    def _track_ids(cls, ids: list[str]) -> list[str]:
        bad = [i for i in ids if not TRACK_ID_RE.match(i)]
        if bad:
            shown = ", ".join(repr(b) for b in bad[:5])
            raise ValueError(f"not Spotify track ids (22 base62 characters): {shown}")
        return list(dict.fromkeys(ids))


class PlaylistCreated(BaseModel):
    id: str = Field(description="Spotify playlist id.")
    url: str = Field(description="The playlist on open.spotify.com.")
    added: int = Field(description="Tracks added.")
    name: str


class SignedOut(BaseModel):
    status: Literal["signed_out"] = "signed_out"
