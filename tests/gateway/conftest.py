"""Real upstream apps for the gateway tests, served by uvicorn on free ports.

They stand in for ingest, stream-processor, recommender and spotify-gateway only so the
gateway's routing, streaming, OpenAPI merging and auth can be tested on real HTTP; they record
every request they receive (method, path, query, headers, how the body arrived).
"""

# No `from __future__ import annotations`: the recommender's models are local to a function.
import asyncio
import hashlib
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any, Literal

import pytest
import servers
from fastapi import FastAPI, Request, Response, UploadFile
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from emergify_cli.broker import free_port
from emergify_gateway.config import Settings
from emergify_gateway.main import create_app

ADMIN_KEY = "test-admin-key-0123456789abcdef"
READ_KEY = "test-read-key-0123456789abcdef"


class RequestRecorder:
    """ASGI middleware: remembers each request and counts the body messages it arrived in."""

    def __init__(self, app: ASGIApp, seen: list[dict[str, Any]]) -> None:
        self.app = app
        self.seen = seen

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        record: dict[str, Any] = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": {k.decode().lower(): v.decode() for k, v in scope["headers"]},
            "body_messages": 0,
            "body_bytes": 0,
        }
        self.seen.append(record)

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request" and message.get("body"):
                record["body_messages"] += 1
                record["body_bytes"] += len(message["body"])
            return message

        await self.app(scope, counting_receive, send)


def fake_service(name: str) -> FastAPI:
    """A FastAPI app with the recorder, a switchable /health and an unrouted internal path."""
    app = FastAPI(title=f"fake {name}")
    app.state.seen = []
    app.state.health = ("ok", 200)
    app.add_middleware(RequestRecorder, seen=app.state.seen)

    @app.get("/health", tags=["health"])
    async def health() -> JSONResponse:
        status, code = app.state.health
        return JSONResponse({"status": status, "service": name, "version": "test"}, code)

    @app.get("/internal/stats", tags=["internal"])
    async def internal_stats() -> dict[str, int]:
        return {"requests": len(app.state.seen)}

    return app


# ---- ingest -------------------------------------------------------------------------------


class Song(BaseModel):
    """Ingest's song (deliberately different from the recommender's ``Song``)."""

    track_id: str = Field(description="Spotify track id.")
    name: str = Field(description="Track name.")
    artists: list[str] = Field(description="Artist names.")


class RejectedRow(BaseModel):
    row: int = Field(description="Row number.")
    errors: list[str] = Field(description="Why it was rejected.")


class UploadReport(BaseModel):
    upload_id: str = Field(description="Upload id.")
    accepted: int = Field(description="Accepted songs.")
    rejected: list[RejectedRow] = Field(description="Rejected rows.")
    size: int = Field(0, description="Bytes of the uploaded file.")
    sha256: str = Field("", description="Digest of the uploaded file.")


class Feedback(BaseModel):
    track_id: str = Field(description="Spotify track id.")
    signal: str = Field(description="like, dislike, ban_artist, skip.")


def ingest_app() -> FastAPI:
    app = fake_service("ingest")

    @app.post("/api/v1/songs", status_code=202, response_model=UploadReport, tags=["songs"])
    async def post_songs(songs: list[Song]) -> UploadReport:
        return UploadReport(upload_id="u1", accepted=len(songs), rejected=[])

    @app.post("/api/v1/songs/upload", status_code=202, response_model=UploadReport, tags=["songs"])
    async def upload_songs(file: UploadFile) -> UploadReport:
        digest, size = hashlib.sha256(), 0
        while chunk := await file.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
        return UploadReport(
            upload_id="u2", accepted=0, rejected=[], size=size, sha256=digest.hexdigest()
        )

    @app.post("/api/v1/feedback", status_code=202, response_model=Feedback, tags=["feedback"])
    async def post_feedback(feedback: Feedback) -> Feedback:
        return feedback

    @app.delete(
        "/api/v1/listeners/{listener_id}/feedback",
        status_code=202,
        response_model=Feedback,
        tags=["feedback"],
    )
    async def erase_feedback(listener_id: str) -> Feedback:
        return Feedback(track_id="", signal="erase")

    return app


# ---- recommender --------------------------------------------------------------------------


MISSING_PROBLEM = {
    "type": "https://emergify.example/problems/song-not-found",
    "title": "Song not found",
    "status": 404,
    "detail": "song missing is not in the catalog yet",
    "track_id": "missing",
}


def recommender_app() -> FastAPI:
    # Models are local so their schema names (Song, Problem) clash with ingest's and the
    # gateway's: the merged document must keep both.
    class Song(BaseModel):  # the same schema name as ingest's, a different schema
        track_id: str = Field(description="Spotify track id.")
        name: str = Field(description="Track name.")
        cluster: int = Field(description="Cluster of the song.")

    class SongPage(BaseModel):
        items: list[Song] = Field(description="Matching songs.")

    class Problem(BaseModel):
        """The recommender's problem shape, different from the gateway's."""

        title: str
        status: int
        detail: str
        track_id: str | None = None

    class Catalog(BaseModel):
        songs: int = Field(description="Song count.")

    class RecommendationRequest(BaseModel):
        seeds: list[str] = Field(description="Seed track ids.")
        limit: int = Field(30, description="How many.")

    class Recommendation(BaseModel):
        track_id: str
        distance: float

    class Recommendations(BaseModel):
        items: list[Recommendation]
        model_version: int

    class ModelInfo(BaseModel):
        version: int
        k: int

    class ClusterPoint(BaseModel):
        track_id: str
        x: float
        y: float
        cluster: int

    class ClusterPoints(BaseModel):
        points: list[ClusterPoint]

    app = fake_service("recommender")
    app.state.missing_problem = MISSING_PROBLEM

    @app.get("/api/v1/songs", response_model=SongPage, tags=["songs"])
    async def search_songs(q: str = "", limit: int = 10) -> SongPage:
        return SongPage(items=[Song(track_id="t1", name=q or "x", cluster=limit)])

    @app.get(
        "/api/v1/songs/{track_id}",
        response_model=Song,
        tags=["songs"],
        responses={404: {"model": Problem}},
    )
    async def get_song(track_id: str) -> Any:
        if track_id == "missing":
            return JSONResponse(
                MISSING_PROBLEM,
                status_code=404,
                media_type="application/problem+json",
                headers={"X-Request-ID": "upstream-must-not-win"},
            )
        return Song(track_id=track_id, name="n", cluster=1)

    @app.get("/api/v1/catalog", response_model=Catalog, tags=["catalog"])
    async def catalog(sleep: float = 0) -> Catalog:
        await asyncio.sleep(sleep)
        return Catalog(songs=4470)

    @app.post("/api/v1/recommendations", response_model=Recommendations, tags=["recommend"])
    async def recommend(body: RecommendationRequest) -> Recommendations:
        items = [Recommendation(track_id=s, distance=0.5) for s in body.seeds]
        return Recommendations(items=items, model_version=3)

    @app.get("/api/v1/model", response_model=ModelInfo, tags=["model"])
    async def model() -> ModelInfo:
        return ModelInfo(version=3, k=12)

    @app.get("/api/v1/clusters", response_model=ClusterPoints, tags=["model"])
    async def clusters() -> ClusterPoints:
        return ClusterPoints(points=[ClusterPoint(track_id="t1", x=0.1, y=0.2, cluster=1)])

    class ListenerFeedback(BaseModel):
        count: int = Field(description="Events stored for the listener.")

    @app.get(
        "/api/v1/listeners/{listener_id}/feedback",
        response_model=ListenerFeedback,
        tags=["listeners"],
    )
    async def listener_feedback(listener_id: str) -> ListenerFeedback:
        return ListenerFeedback(count=0)

    return app


# ---- stream processor ---------------------------------------------------------------------


class RetrainAccepted(BaseModel):
    status: Literal["started", "queued"] = Field(description="started, or queued behind a run")


def stream_processor_app() -> FastAPI:
    app = fake_service("stream-processor")

    @app.post("/admin/retrain", status_code=202, response_model=RetrainAccepted, tags=["model"])
    async def retrain() -> RetrainAccepted:
        return RetrainAccepted(status="started")

    return app


# ---- spotify gateway ----------------------------------------------------------------------


class Profile(BaseModel):
    id: str
    cookies: dict[str, str] = Field(description="Cookies the request carried (test echo).")


class PlaylistRequest(BaseModel):
    name: str
    track_ids: list[str]


class PlaylistCreated(BaseModel):
    id: str
    url: str
    added: int


def spotify_app() -> FastAPI:
    app = fake_service("spotify-gateway")

    @app.get("/api/v1/spotify/login", status_code=307, tags=["spotify"], response_model=None)
    async def login() -> Response:
        response = RedirectResponse(
            "https://accounts.spotify.com/authorize?client_id=abc&state=s1", status_code=307
        )
        response.set_cookie("oauth_state", "s1", httponly=True)
        response.set_cookie("pkce_verifier", "v1", httponly=True)
        return response

    @app.get("/api/v1/spotify/callback", status_code=307, tags=["spotify"], response_model=None)
    async def callback(request: Request, code: str, state: str) -> Response:
        # An absolute URL to its own address, as a service that builds URLs from its
        # request would: the gateway must keep the browser on the gateway.
        response = RedirectResponse(f"{request.base_url}api/v1/spotify/me", status_code=307)
        response.set_cookie("emergify_session", f"{code}-{state}", httponly=True)
        return response

    @app.post("/api/v1/spotify/logout", status_code=303, tags=["spotify"], response_model=None)
    async def logout() -> Response:
        response = RedirectResponse("http://127.0.0.1:8501/?spotify=signed_out", status_code=303)
        response.delete_cookie("emergify_session")
        return response

    @app.get("/api/v1/spotify/me", response_model=Profile, tags=["spotify"])
    async def me(request: Request) -> Profile:
        return Profile(id="listener", cookies=dict(request.cookies))

    @app.post(
        "/api/v1/spotify/playlists",
        status_code=201,
        response_model=PlaylistCreated,
        tags=["spotify"],
    )
    async def create_playlist(body: PlaylistRequest) -> PlaylistCreated:
        return PlaylistCreated(id="p1", url="https://open.spotify.com/playlist/p1", added=3)

    return app


# ---- serving ------------------------------------------------------------------------------


class ServedApp(servers.ServedApp):
    """A stand-in served by uvicorn on a free port, with what it recorded."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        super().__init__(app, port, timeout_graceful_shutdown=3)

    @property
    def seen(self) -> list[dict[str, Any]]:
        return self.app.state.seen

    def request_with_id(self, request_id: str) -> dict[str, Any]:
        """The request this app received with ``X-Request-ID: request_id``."""
        matches = [r for r in self.seen if r["headers"].get("x-request-id") == request_id]
        assert matches, f"{self.app.title} never saw request {request_id}"
        return matches[-1]


@pytest.fixture(scope="session")
def upstreams() -> Iterator[dict[str, ServedApp]]:
    """The four stand-in services, running for the whole session."""
    apps = {
        "ingest": ingest_app(),
        "stream-processor": stream_processor_app(),
        "recommender": recommender_app(),
        "spotify-gateway": spotify_app(),
    }
    served: dict[str, ServedApp] = {}
    try:
        for name, app in apps.items():
            served[name] = ServedApp(app).start()
        yield served
    finally:
        for server in served.values():
            server.stop()


def gateway_settings(upstreams: dict[str, ServedApp], **overrides: Any) -> Settings:
    """Gateway settings pointing at the stand-in services, with test keys."""
    values: dict[str, Any] = {
        "ingest_url": upstreams["ingest"].url,
        "stream_processor_url": upstreams["stream-processor"].url,
        "recommender_url": upstreams["recommender"].url,
        "spotify_gateway_url": upstreams["spotify-gateway"].url,
        "admin_api_key": ADMIN_KEY,
        "read_api_keys": f"{READ_KEY}, another-read-key-xyz-0123456789",
        "openapi_cache_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture
def make_settings(upstreams: dict[str, ServedApp]) -> Callable[..., Settings]:
    """``make_settings(**overrides)``: gateway settings in front of the stand-in services."""
    return lambda **overrides: gateway_settings(upstreams, **overrides)


@pytest.fixture
def make_gateway(upstreams: dict[str, ServedApp]) -> Iterator[Callable[..., TestClient]]:
    """``make_gateway(**overrides)``: a running gateway app (lifespan on) with those settings."""
    with ExitStack() as stack:
        yield lambda **overrides: stack.enter_context(
            TestClient(create_app(gateway_settings(upstreams, **overrides)))
        )


@pytest.fixture
def served_gateway(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., str]]:
    """``served_gateway(**overrides)``: the gateway served by uvicorn with the options it
    runs with in production (limits, keep-alive); its base URL."""
    from emergify_gateway.__main__ import uvicorn_options

    with servers.serving() as serve:

        def start(**overrides: Any) -> str:
            settings = make_settings(**overrides)
            options = uvicorn_options(settings)
            options.pop("host"), options.pop("port")
            return serve(create_app(settings), **options).url

        yield start


@pytest.fixture
def gateway(make_gateway: Callable[..., TestClient]) -> TestClient:
    """The gateway app with default test settings."""
    return make_gateway()


@pytest.fixture
def serve() -> Iterator[Callable[[Any], ServedApp]]:
    """``serve(app)``: serve an ASGI app with uvicorn on a free port until the test ends."""
    with ExitStack() as stack:

        def start(app: Any) -> ServedApp:
            served = ServedApp(app).start()
            stack.callback(served.stop)
            return served

        yield start


@pytest.fixture
def closed_url() -> str:
    """A URL nothing listens on (connection refused)."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture
def admin() -> dict[str, str]:
    return {"X-API-Key": ADMIN_KEY}


@pytest.fixture
def reader() -> dict[str, str]:
    return {"X-API-Key": READ_KEY}
