"""``POST /api/v1/songs`` (JSON) and ``POST /api/v1/songs/upload`` (CSV as multipart)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.datastructures import UploadFile

from emergify_contracts.problems import ProblemError, problem_responses
from emergify_contracts.song import Song
from emergify_ingest.api.deps import IngestorDep, SettingsDep
from emergify_ingest.request_limits import (
    require_identity_encoding,
    require_media_type,
    size_limited,
)
from emergify_ingest.upload import UploadReport

router = APIRouter(prefix="/api/v1/songs", tags=["songs"])

_SONG_SCHEMA: dict[str, Any] = Song.model_json_schema()
_JSON_BODY = {
    "requestBody": {
        "required": True,
        "description": "One song object or a list of them (field names of the canonical song).",
        "content": {
            "application/json": {
                "schema": {
                    "anyOf": [_SONG_SCHEMA, {"type": "array", "items": _SONG_SCHEMA, "minItems": 1}]
                }
            }
        },
    }
}
_CSV_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "CSV: an Exportify export, the Kaggle tracks layout, "
                            "the genre-labelled layout or canonical columns. UTF-8 (with or "
                            "without BOM); Windows-1252 is accepted with a warning.",
                        }
                    },
                }
            }
        },
    }
}
_RESPONSES = problem_responses(400, 413, 415, 422, 503)


@router.post(
    "",
    name="ingest_json",
    status_code=202,
    response_model=UploadReport,
    summary="Ingest one song or a list of songs (JSON)",
    responses=_RESPONSES,
    openapi_extra=_JSON_BODY,
)
async def ingest_json(
    request: Request, ingestor: IngestorDep, settings: SettingsDep
) -> UploadReport:
    """Validate each song; save and publish the valid ones; list the rest with reasons."""
    require_media_type(
        request, "application/json", hint="send a song object or a list as application/json"
    )
    require_identity_encoding(request)
    body = await size_limited(request, settings.max_upload_bytes).body()
    return await ingestor.ingest_json(body)


@router.post(
    "/upload",
    name="upload_csv",
    status_code=202,
    response_model=UploadReport,
    summary="Ingest a CSV file of songs (multipart field 'file')",
    responses=_RESPONSES,
    openapi_extra=_CSV_BODY,
)
async def upload_csv(
    request: Request, ingestor: IngestorDep, settings: SettingsDep
) -> UploadReport:
    """Validate each row; save and publish the valid songs; list the rest with reasons."""
    require_media_type(
        request,
        "multipart/form-data",
        hint="send multipart/form-data with the CSV in the field 'file' (curl -F file=@songs.csv)",
    )
    require_identity_encoding(request)
    form = await size_limited(request, settings.max_upload_bytes).form(max_files=1, max_fields=20)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ProblemError(
                422,
                "the multipart form has no file in the field 'file'; attach the CSV as "
                "'file' (curl -F file=@songs.csv)",
                title="Missing file",
            )
        return await ingestor.ingest_csv(upload.file)
    finally:
        await form.close()
