"""The shared problem+json contract: every error a service raises becomes an RFC 9457 document."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field, model_validator

from emergify_contracts.problems import (
    PROBLEM_MEDIA_TYPE,
    Problem,
    ProblemError,
    install_problem_handlers,
    operation_id,
    problem_responses,
)
from emergify_contracts.song import TRACK_ID_RE


class NotReady(RuntimeError):
    """A domain exception that knows nothing about HTTP."""


class Body(BaseModel):
    seeds: list[Annotated[str, Field(pattern=TRACK_ID_RE.pattern)]] = []
    limit: int = Field(10, le=100)

    @model_validator(mode="after")
    def _some_seed(self) -> Body:
        if self.limit == 0:
            raise ValueError("limit 0 asks for nothing")
        return self


def build_app(**options: Any) -> FastAPI:
    app = FastAPI(generate_unique_id_function=operation_id)
    install_problem_handlers(
        app,
        service="test service",
        problems={NotReady: lambda exc: ProblemError(503, f"{exc}", headers={"Retry-After": "2"})},
        **options,
    )

    @app.get("/fail", tags=["things"], responses=problem_responses(409, 503))
    def fail() -> dict[str, str]:
        raise ProblemError(409, "it is taken; pick another", headers={"X-Why": "taken"}, taken=3)

    @app.get("/titled")
    def titled() -> dict[str, str]:
        raise ProblemError(
            422, "the file is empty", title="Empty file", type="https://e.example/empty"
        )

    @app.get("/limited")
    def limited(limit: Annotated[int, Query(le=100)] = 10) -> dict[str, int]:
        return {"limit": limit}

    @app.post("/body")
    def body(payload: Body) -> dict[str, int]:
        return {"limit": payload.limit}

    @app.get("/gone")
    def gone() -> dict[str, str]:
        raise HTTPException(404, "song x was deleted")

    @app.get("/not-ready")
    def not_ready() -> dict[str, str]:
        raise NotReady("the catalog is loading")

    @app.get("/bug")
    def bug() -> dict[str, str]:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(build_app(), raise_server_exceptions=False)


def problem(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = response.json()
    assert body["status"] == status and body["type"] and body["title"] and body["detail"]
    return body


def test_problem_error_becomes_a_document_with_headers_and_extensions(client: TestClient) -> None:
    response = client.get("/fail")
    assert problem(response, 409) == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "it is taken; pick another",
        "instance": "/fail",
        "taken": 3,
    }
    assert response.headers["x-why"] == "taken"
    body = problem(client.get("/titled"), 422)
    assert body["title"] == "Empty file" and body["type"] == "https://e.example/empty"


def test_validation_errors_name_each_field(client: TestClient) -> None:
    body = problem(client.get("/limited", params={"limit": 101}), 422)
    assert body["title"] == "Invalid request"
    assert body["detail"] == "query.limit: Input should be less than or equal to 100"
    assert body["errors"] == [body["detail"]]

    body = problem(client.post("/body", json={"seeds": ["nope"], "limit": 101}), 422)
    assert body["errors"] == [
        "body.seeds.0: 'nope' is not a 22-character base62 Spotify id",
        "body.limit: Input should be less than or equal to 100",
    ]
    assert body["detail"] == "; ".join(body["errors"])
    # A model validator's message reads as written, without pydantic's "Value error, ".
    assert problem(client.post("/body", json={"limit": 0}), 422)["errors"] == [
        "body: limit 0 asks for nothing"
    ]


def test_http_errors_say_what_is_wrong(client: TestClient) -> None:
    body = problem(client.get("/nowhere"), 404)
    assert body["title"] == "Not Found"
    assert body["detail"] == "/nowhere is not a path of the test service"
    wrong = client.delete("/fail")
    assert problem(wrong, 405)["detail"] == "DELETE is not allowed on /fail"
    assert wrong.headers["allow"] == "GET"
    # A route's own detail is kept.
    assert problem(client.get("/gone"), 404)["detail"] == "song x was deleted"


def test_mapped_domain_exceptions_and_crashes(client: TestClient) -> None:
    response = client.get("/not-ready")
    assert problem(response, 503)["detail"] == "the catalog is loading"
    assert response.headers["retry-after"] == "2"
    body = problem(client.get("/bug"), 500)
    assert body["title"] == "Internal Server Error"
    assert body["detail"] == "the test service failed unexpectedly; the error is in its log"
    assert "secret" not in client.get("/bug").text


def test_a_service_can_add_context_and_its_own_404_detail() -> None:
    def context(request: Request) -> dict[str, str]:
        return {"request_id": request.headers.get("x-request-id", "none")}

    app = build_app(context=context, not_found="{path} is unknown here; see /docs")
    with TestClient(app, raise_server_exceptions=False) as client:
        body = problem(client.get("/nowhere", headers={"X-Request-ID": "r-1"}), 404)
        assert body["detail"] == "/nowhere is unknown here; see /docs"
        assert body["request_id"] == "r-1"
        assert problem(client.get("/fail"), 409)["request_id"] == "none"
        assert problem(client.get("/bug"), 500)["request_id"] == "none"


def test_openapi_names_operations_and_documents_problems(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    op = doc["paths"]["/fail"]["get"]
    assert op["operationId"] == "things-fail"
    assert doc["paths"]["/titled"]["get"]["operationId"] == "default-titled"
    conflict = op["responses"]["409"]
    assert conflict["description"] == "Conflict"
    assert conflict["content"][PROBLEM_MEDIA_TYPE]["schema"] == {
        "$ref": "#/components/schemas/Problem"
    }
    assert set(doc["components"]["schemas"]["Problem"]["properties"]) == set(Problem.model_fields)
    described = problem_responses(404, descriptions={404: "No model yet."})
    assert described[404]["description"] == "No model yet."
