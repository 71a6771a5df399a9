"""The signed-in listener as Emergify sees them: profile, top artists, liked songs, favourite.

Plain functions over a :class:`~emergify_spotify.spotify_api.SpotifyApi` and the
:class:`~emergify_spotify.catalog.Catalog`; the routes only call them.
"""

from __future__ import annotations

import random
from typing import Any

from emergify_contracts.problems import ProblemError
from emergify_spotify.catalog import Catalog, CatalogUnavailableError, features_of
from emergify_spotify.schemas import (
    Artist,
    AudioFeatures,
    Favourite,
    Image,
    LikedSong,
    LikedSongs,
    Profile,
    TopArtists,
)
from emergify_spotify.spotify_api import SpotifyApi

SPOTIFY_PAGE = 50  # the largest `limit` /v1/me/tracks and /v1/me/top/artists accept


def _images(raw: list[dict[str, Any]] | None) -> list[Image]:
    return [Image(url=i["url"], height=i.get("height"), width=i.get("width")) for i in raw or []]


def profile(api: SpotifyApi) -> Profile:
    """``GET /v1/me``: id, display name, images."""
    me = api.call(lambda sp: sp.me(), "read your profile")
    return Profile(id=me["id"], display_name=me.get("display_name"), images=_images(me["images"]))


def top_artists(api: SpotifyApi, limit: int, time_range: str) -> TopArtists:
    """``GET /v1/me/top/artists``."""
    page = api.call(
        lambda sp: sp.current_user_top_artists(limit=limit, offset=0, time_range=time_range),
        "read your top artists",
    )
    items = [
        Artist(
            id=a["id"],
            name=a["name"],
            genres=list(a.get("genres") or []),
            images=_images(a.get("images")),
            spotify_url=(a.get("external_urls") or {}).get("spotify"),
        )
        for a in page["items"]
    ]
    return TopArtists(items=items, time_range=time_range)


def _liked_song(saved: dict[str, Any], in_catalog: bool | None) -> LikedSong:
    track = saved["track"]
    return LikedSong(
        id=track["id"],
        name=track["name"],
        artists=[a["name"] for a in track.get("artists", [])],
        album=(track.get("album") or {}).get("name"),
        added_at=saved["added_at"],
        spotify_url=(track.get("external_urls") or {}).get("spotify"),
        in_catalog=in_catalog,
    )


def saved_tracks(api: SpotifyApi, limit: int, offset: int = 0) -> tuple[list[dict], int]:
    """Up to ``limit`` liked songs from ``offset`` (newest first), paging through Spotify, and
    how many the listener has. Local files and unavailable tracks (no id) are skipped."""
    items: list[dict[str, Any]] = []
    total = 0
    position = offset
    while len(items) < limit:
        size = min(SPOTIFY_PAGE, limit - len(items))
        page = api.call(
            lambda sp, size=size, position=position: sp.current_user_saved_tracks(
                limit=size, offset=position
            ),
            "read your liked songs",
        )
        total = page["total"]
        items.extend(i for i in page["items"] if (i.get("track") or {}).get("id"))
        position += len(page["items"])
        if not page.get("next") or not page["items"]:
            break
    return items[:limit], total


def liked(api: SpotifyApi, catalog: Catalog, limit: int, offset: int) -> LikedSongs:
    """Liked songs, each marked with whether the catalog knows it."""
    items, total = saved_tracks(api, limit, offset)
    known = catalog.known([i["track"]["id"] for i in items])
    songs = [_liked_song(i, None if known is None else known[i["track"]["id"]]) for i in items]
    return LikedSongs(items=songs, total=total, offset=offset, catalog_available=known is not None)


def latest_added(api: SpotifyApi, catalog: Catalog) -> LikedSong:
    """The newest liked song (Spotify lists liked songs newest first)."""
    items, _ = saved_tracks(api, 1)
    if not items:
        raise ProblemError(
            404, "you have no liked songs on Spotify yet: like a song, then try again"
        )
    known = catalog.known([items[0]["track"]["id"]])
    return _liked_song(items[0], None if known is None else known[items[0]["track"]["id"]])


def favourite(api: SpotifyApi, catalog: Catalog, scan: int, rng: random.Random) -> Favourite:
    """A random liked song with audio features: from our catalog when it knows one of the
    liked songs; else from Spotify's /audio-features, which refuses most apps since Nov 2024
    (then a 422 problem suggesting a catalog song instead)."""
    items, _ = saved_tracks(api, scan)
    if not items:
        raise ProblemError(
            404, "you have no liked songs on Spotify yet: like a song, then try again"
        )
    order = list(items)
    rng.shuffle(order)
    try:
        # The first catalog hit in a random order is a uniformly random known liked song.
        for saved in order:
            song = catalog.song(saved["track"]["id"])
            if song is not None:
                return Favourite(
                    song=_liked_song(saved, True),
                    features=AudioFeatures(**features_of(song)),
                    source="catalog",
                    cluster=song.get("cluster"),
                )
    except CatalogUnavailableError as exc:
        raise ProblemError(
            503,
            f"the catalog (recommender) is not available ({exc}); try again shortly",
            headers={"Retry-After": "5"},
        ) from None
    return _favourite_from_spotify(api, catalog, order, rng)


def _favourite_from_spotify(
    api: SpotifyApi, catalog: Catalog, order: list[dict[str, Any]], rng: random.Random
) -> Favourite:
    saved = order[0]
    track_id = saved["track"]["id"]
    try:
        answer = api.call(lambda sp: sp._get("audio-features", ids=track_id), "read audio features")
        vectors = [v for v in (answer or {}).get("audio_features") or [] if v]
        refused = not vectors
    except ProblemError as exc:
        if exc.status != 403:
            raise
        refused = True
    if refused:
        artists = list(
            dict.fromkeys(a["name"] for s in order for a in s["track"].get("artists", []))
        )
        suggestion = catalog.suggestion(artists[:10], rng)
        hint = (
            f" Try a catalog song instead, e.g. '{suggestion['name']}' by "
            f"{', '.join(suggestion['artists'])} (track {suggestion['track_id']}), as the seed "
            "of POST /api/v1/recommendations."
            if suggestion
            else " Upload songs you like (POST /api/v1/songs) and try again."
        )
        raise ProblemError(
            422,
            f"none of the {len(order)} liked songs looked at is in Emergify's catalog, and "
            "Spotify refuses audio features to this app (new and development-mode apps lost "
            "access on 27 Nov 2024), so no liked song has features to recommend from." + hint,
            title="No audio features for your liked songs",
            suggestion=suggestion,
        )
    return Favourite(
        song=_liked_song(saved, False),
        features=AudioFeatures(**features_of(vectors[0])),
        source="spotify",
    )
