"""Request and response bodies of the recommender's public API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from emergify_contracts.song import AUDIO_FEATURES, LOUDNESS_RANGE, TEMPO_RANGE, TRACK_ID_RE

TrackId = Annotated[
    str,
    StringConstraints(pattern=TRACK_ID_RE.pattern),
    Field(
        description="Spotify track id, 22 base62 characters.", examples=["5P6nbeGMqnAGwqt9rrraaQ"]
    ),
]
_UNIT = {"ge": 0.0, "le": 1.0}


class AudioFeatures(BaseModel):
    """The nine audio features used for ranking (Spotify's definitions)."""

    model_config = ConfigDict(extra="forbid")

    danceability: float = Field(description="0..1: how suitable for dancing.", **_UNIT)
    energy: float = Field(description="0..1: intensity and activity.", **_UNIT)
    loudness: float = Field(
        description="Overall loudness in dB.", ge=LOUDNESS_RANGE[0], le=LOUDNESS_RANGE[1]
    )
    speechiness: float = Field(description="0..1: presence of spoken words.", **_UNIT)
    acousticness: float = Field(description="0..1: confidence the track is acoustic.", **_UNIT)
    instrumentalness: float = Field(description="0..1: likelihood of no vocals.", **_UNIT)
    liveness: float = Field(description="0..1: presence of an audience.", **_UNIT)
    valence: float = Field(description="0..1: musical positiveness.", **_UNIT)
    tempo: float = Field(
        description="Beats per minute, 0..1000.", ge=TEMPO_RANGE[0], le=TEMPO_RANGE[1]
    )

    def vector(self) -> list[float]:
        """The features in vector order."""
        return [getattr(self, f) for f in AUDIO_FEATURES]


class SimilarityOverride(BaseModel):
    """A request's own similarity setting (docs/similarity.md)."""

    model_config = ConfigDict(extra="forbid")

    artist_weight: float = Field(
        ge=0.0,
        le=1_000.0,
        allow_inf_nan=False,
        description="Weight of the artist-profile L1 in the distance (audio L1 + weight x "
        "artist L1); 0 ranks by the song's own sound alone. Default: the model's setting.",
    )


class SimilarityInfo(BaseModel):
    """The similarity a ranking used, or the one a model version was published with."""

    artist_weight: float = Field(
        description="Weight of the artist-profile L1 (0: own sound only, as for a model "
        "without artist profiles)."
    )
    multi_artist_rule: Literal["mean", "weighted", "first"] = Field(
        description="How a song with several artists gets its artist vector."
    )


class RecommendationRequest(BaseModel):
    """Seeds (songs of the catalog, or a feature vector) and the playlist rules."""

    model_config = ConfigDict(extra="forbid")

    seeds: list[TrackId] | None = Field(
        None,
        min_length=1,
        max_length=50,
        description="Track ids of songs the listener loves. Several make one playlist: a "
        "song's distance is to its nearest seed, and each item names that seed.",
    )
    seed_features: AudioFeatures | None = Field(
        None, description="A feature vector to match instead of seed songs."
    )
    limit: int = Field(
        30,
        ge=1,
        le=500,
        description="How many songs to return: at most 100, or 500 with `within_distance`.",
    )
    max_popularity: int | None = Field(
        None,
        ge=0,
        le=100,
        description="The emerging threshold: only songs with popularity <= this "
        "(songs of unknown popularity pass). Unset: the EMERGIFY_EMERGING_MAX_POPULARITY "
        "setting; 100 lifts the threshold.",
    )
    max_per_artist: int = Field(2, ge=1, le=50, description="At most this many songs per artist.")
    exclude_ids: list[TrackId] = Field(
        default_factory=list, max_length=10_000, description="Track ids never to return."
    )
    diversity: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="0 = purely by distance. Above 0, over-fetches the nearest songs that pass "
        "the rules (limit x (1 + 2 x diversity)) and picks `limit` of them preferring artists "
        "not yet in the playlist; 1 = a repeated artist costs the whole distance range of "
        "the over-fetched list.",
    )
    # --- the listener loop (docs/listener-loop.md) ---
    listener_id: str | None = Field(
        None,
        max_length=200,
        description="API-key callers: the listener the request is for (namespaced by the "
        "key). A signed-in listener needs none (`me` or their own id is accepted). With a "
        "listener, their disliked songs and banned artists are never returned, their liked "
        "songs are extra seeds, and songs recommended to them recently are skipped.",
    )
    include_recent: bool = Field(
        False,
        description="With a listener: also return songs recommended to them in the last "
        "EMERGIFY_RECENT_DAYS days (skipped by default).",
    )
    seed_weights: list[Annotated[float, Field(gt=0.0, le=1.0)]] | None = Field(
        None,
        description="One weight in (0, 1] per seed, parallel to `seeds`: a seed's distances "
        "are divided by its weight, so a lighter seed reaches less far. Default 1 each.",
    )
    within_distance: float | None = Field(
        None,
        gt=0.0,
        description="Return every song within this distance (nearest first, at most "
        "`limit`, which may then go up to 500) instead of a fixed count.",
    )
    similarity: SimilarityOverride | None = Field(
        None,
        description="Override the model's similarity setting for this request, e.g. "
        '`{"artist_weight": 0}` to rank by the songs\' own sound alone.',
    )

    @model_validator(mode="after")
    def _one_seed_kind(self) -> RecommendationRequest:
        if (self.seeds is None) == (self.seed_features is None):
            raise ValueError("give exactly one of `seeds` (track ids) or `seed_features`")
        return self

    @model_validator(mode="after")
    def _listener_options(self) -> RecommendationRequest:
        if self.seed_weights is not None and (
            self.seeds is None or len(self.seed_weights) != len(self.seeds)
        ):
            raise ValueError("`seed_weights` needs one weight per entry of `seeds`")
        if self.limit > 100 and self.within_distance is None:
            raise ValueError("`limit` above 100 needs `within_distance`")
        if self.within_distance is not None and self.diversity > 0:
            raise ValueError("`within_distance` returns the exact list: `diversity` must be 0")
        return self


class SeedInfo(BaseModel):
    """What the ranking matched against."""

    track_ids: list[str] = Field(description="The seed track ids (empty for seed_features).")
    features: AudioFeatures = Field(
        description="The seed's features (the seeds' mean, for information: several seeds "
        "are matched one by one, not by their mean)."
    )
    cluster: int | None = Field(
        description="The (first) seed's cluster; null before a model exists."
    )
    clusters: list[int | None] = Field(
        default_factory=list,
        description="Each seed's cluster, in track_ids order (one entry for seed_features).",
    )


class Explanation(BaseModel):
    """Why a song was picked: which part made it close, and where it sounds most and least
    like its seed."""

    closest: list[str] = Field(
        description="The 2 features nearest to the seed's (standardized absolute difference)."
    )
    furthest: list[str] = Field(description="The 2 features furthest from the seed's.")
    reasons: list[str] = Field(
        default_factory=list,
        description="What made the song close, strongest first: `own sound` (its audio "
        "features), `artist's sound` (its artists' profile), whichever is the smaller "
        "fraction of its typical distance in the catalog (docs/similarity.md); then "
        "`shared genres` last when `shared_genres` is not empty.",
    )
    shared_genres: list[str] = Field(
        default_factory=list,
        description="The song's `genres` that the seed it is nearest to (`seed_track_id`) "
        "has too, in the song's order, compared case-insensitively; empty for "
        "`seed_features`. Named, not measured: genres are no part of `distance` "
        "(docs/similarity.md).",
    )
    audio_distance: float | None = Field(
        None, description="The audio part: L1 between standardized features."
    )
    artist_distance: float | None = Field(
        None, description="The artist part before weighting: L1 between artist vectors."
    )


class RecommendedItem(BaseModel):
    """One recommended song."""

    track_id: str
    name: str
    artists: list[str]
    genres: list[str] = Field(
        default_factory=list,
        description="The genre tags the catalog holds for the song (its artists' genres, "
        "e.g. an Exportify `Genres` column); empty when it has none, or when the feature "
        "table could not be read for this answer. Not part of `distance`.",
    )
    album: str | None
    popularity: int | None = Field(description="0..100; null when unknown.")
    distance: float = Field(
        description="Manhattan distance to the nearest seed, standardized features."
    )
    cluster: int | None
    seed_track_id: str | None = Field(
        None, description="The seed this song is nearest to (null for seed_features)."
    )
    explanation: Explanation
    features: AudioFeatures
    spotify_url: str


class SeedUsed(BaseModel):
    """One seed the ranking used, with its weight and why it is a seed."""

    track_id: str
    weight: float = Field(description="In (0, 1]: the seed's distances are divided by it.")
    why: Literal["seed", "like"] = Field(
        description="`seed`: named in the request; `like`: the listener liked it."
    )


class RecommendationResponse(BaseModel):
    """Recommended songs, nearest first."""

    model_version: int | None = Field(description="Model used; null before the first model.")
    table_version: int | None = Field(
        description="Newest micro-batch in the catalog that answered; null when it is empty."
    )
    replica: str | None = Field(
        None, description="The recommender replica that answered (its EMERGIFY_REPLICA_NAME)."
    )
    seed: SeedInfo
    items: list[RecommendedItem] = Field(description="Ascending by distance.")
    count: int
    listener_id: str | None = Field(
        None, description="The listener whose feedback and history applied (null: none)."
    )
    seeds_used: list[SeedUsed] = Field(
        default_factory=list,
        description="Every seed song the ranking matched against: the request's seeds, then "
        "the listener's liked songs (newest first), with weights.",
    )
    similarity: SimilarityInfo | None = Field(
        None, description="The similarity the ranking used (null before a model)."
    )


class FeedbackItemOut(BaseModel):
    """One stored feedback event."""

    event_id: str
    track_id: str
    signal: str
    at: datetime


class ListenerFeedback(BaseModel):
    """What Emergify keeps of a listener's feedback, newest first."""

    listener_id: str
    items: list[FeedbackItemOut]
    count: int


class SongDetail(BaseModel):
    """A song of the feature table, with its cluster under the current model."""

    track_id: str
    name: str
    artists: list[str]
    artist_ids: list[str]
    album: str | None
    release_date: str | None
    duration_ms: int | None
    popularity: int | None
    explicit: bool | None
    genres: list[str]
    danceability: float
    energy: float
    loudness: float
    speechiness: float
    acousticness: float
    instrumentalness: float
    liveness: float
    valence: float
    tempo: float
    key: int | None
    mode: int | None
    time_signature: int | None
    cluster: int | None = Field(description="Cluster under model_version; null before a model.")
    model_version: int | None
    table_version: int = Field(description="Micro-batch that last wrote the song.")
    ingested_at: datetime | None
    updated_at: datetime | None
    spotify_url: str


class SongSummary(BaseModel):
    """A search hit."""

    track_id: str
    name: str
    artists: list[str]
    album: str | None
    popularity: int | None
    cluster: int | None
    spotify_url: str


class SearchResponse(BaseModel):
    """Songs whose name or artists contain the query."""

    query: str
    items: list[SongSummary]
    count: int = Field(description="Items returned.")
    total: int = Field(description="Songs that matched (may exceed the limit).")


class Freshness(BaseModel):
    last_batch_at: datetime | None = Field(description="When the last micro-batch committed.")
    seconds_since_last_batch: float | None


class SpeedLayer(BaseModel):
    lag: int = Field(description="Records on the songs topic not yet in the feature table.")


class CatalogStatus(BaseModel):
    """What the serving layer holds and how fresh it is."""

    songs: int
    last_update: datetime | None = Field(description="Newest updated_at among loaded songs.")
    table_version: int | None
    model_version: int | None
    model_trained_at: datetime | None
    freshness: Freshness
    speed_layer: SpeedLayer | None = Field(
        description="null when the stream processor is unreachable."
    )


class ModelInfo(BaseModel):
    """The current clustering model."""

    version: int
    k: int
    silhouette: float
    features: list[str]
    trained_at: datetime
    songs: int = Field(description="Songs the model was trained on.")
    metrics: dict[str, Any]
    explained_variance: list[float]
    similarity: SimilarityInfo = Field(
        description="The similarity setting stored with the model version (the settings' "
        "default for a model published before it was stored)."
    )


class ClusterPoint(BaseModel):
    track_id: str
    name: str
    x: float = Field(description="First PCA coordinate.")
    y: float = Field(description="Second PCA coordinate.")
    cluster: int


class Centroid(BaseModel):
    cluster: int
    x: float
    y: float


class ClustersResponse(BaseModel):
    """A deterministic sample of songs in the model's PCA plane, and the centroids."""

    model_version: int
    songs: int = Field(description="Songs in the catalog (the sample may hold fewer).")
    points: list[ClusterPoint]
    centroids: list[Centroid]


class Health(BaseModel):
    status: Literal["ok", "starting", "degraded"]
    service: str
    songs: int | None = None
    model_version: int | None = None
    table_version: int | None = None
    replica: str | None = Field(None, description="This recommender replica's name.")
    change_feed: str | None = Field(None, description="Kafka change feed: connecting/connected/...")
    detail: str | None = None
