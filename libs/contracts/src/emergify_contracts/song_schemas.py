"""Every schema of the song, derived from :data:`~emergify_contracts.song_fields.SONG_FIELDS`.

- :func:`song_model`: the pydantic model (``Song``) with validators generated from the rules;
- :func:`arrow_schema`: the master dataset's Parquet files (song fields, then provenance);
- :func:`spark_ddl` / :func:`spark_struct`: Spark schemas of the lake and the songs topic's
  events (contracts does not import pyspark: DDL text, or a ``StructType`` built with the
  caller's ``pyspark.sql.types``);
- :func:`table_columns`: the SQLAlchemy columns of the feature table ``songs``;
- :func:`event_json_schema`: the JSON Schema of a songs-topic event;
- column lists: :func:`lake_columns`, :func:`batch_columns`, :func:`recommender_columns`.

Each takes the field table as an argument (default: the song's), so a new field reaches all
of them from one entry.
"""

from __future__ import annotations

from functools import partial
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from emergify_contracts.song_fields import SONG_FIELDS, SongField, audio_features, fields_in
from emergify_contracts.song_rules import check_value

if TYPE_CHECKING:
    import pyarrow as pa

Fields = tuple[SongField, ...]

#: Provenance columns of a master-dataset row, after the song fields.
LAKE_PROVENANCE: tuple[str, ...] = ("upload_id", "source", "ingested_at", "row")
#: Columns of a cleaned speed-layer micro-batch besides the song fields.
BATCH_PROVENANCE: tuple[str, ...] = (
    "upload_id",
    "source",
    "ingested_at",
    "kafka_partition",
    "kafka_offset",
)
#: Feature-table bookkeeping the serving layer loads besides the song fields (the Kafka
#: position and the stored cluster stay behind: clusters are recomputed from the model).
RECOMMENDER_BOOKKEEPING: tuple[str, ...] = (
    "upload_id",
    "source",
    "ingested_at",
    "table_version",
    "updated_at",
)

_PY_TYPES: dict[str, Any] = {
    "text": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "text_list": list[str],
}


# --- pydantic ----------------------------------------------------------------------------


class SongBase(BaseModel):
    """What every generated song model shares: whitespace trimmed, unknown keys ignored."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    def features(self) -> list[float]:
        """The audio feature vector, in field order."""
        return [getattr(self, f) for f in audio_features(_fields_of(type(self)))]


def _fields_of(model: type[BaseModel]) -> Fields:
    return getattr(model, "__song_fields__", SONG_FIELDS)


def _validate(f: SongField, value: Any) -> Any:
    cleaned, problem = check_value(f, value)
    if problem is not None:
        raise ValueError(problem)
    return cleaned


def _json_constraints(f: SongField) -> dict[str, Any]:
    """The field's rules as JSON Schema keywords (documentation: the validators enforce them
    with the rules' own messages)."""
    out: dict[str, Any] = {}
    if f.minimum is not None:
        out["minimum"] = f.minimum
    if f.maximum is not None:
        out["maximum"] = f.maximum
    if f.kind == "text_list":
        if f.min_items:
            out["minItems"] = f.min_items
        if f.max_length is not None:
            out["maxItems"] = f.max_length
        if f.pattern is not None:
            out["items"] = {"type": "string", "pattern": f.pattern}
    else:
        if f.max_length is not None:
            out["maxLength"] = f.max_length
        if f.pattern is not None:
            out["pattern"] = f.pattern
    return out


def song_model(
    fields: Fields = SONG_FIELDS, name: str = "Song", base: type[SongBase] = SongBase
) -> type[SongBase]:
    """The pydantic model of a song with ``fields``: types from each field's kind, one
    validator per field generated from its rules (:func:`.song_rules.check_value`)."""
    definitions: dict[str, Any] = {}
    for f in fields:
        kind = _PY_TYPES[f.kind]
        check = AfterValidator(partial(_validate, f))
        info: dict[str, Any] = {
            "description": f.description or None,
            "json_schema_extra": _json_constraints(f) or None,
        }
        if f.kind == "text_list":
            annotation: Any = Annotated[kind, check]
            default = Field(default_factory=list, **info) if not f.required else Field(**info)
        elif f.required:
            annotation, default = Annotated[kind, check], Field(**info)
        else:
            annotation, default = Annotated[kind | None, check], Field(None, **info)
        definitions[f.name] = (annotation, default)
    model = create_model(name, __base__=base, __module__=base.__module__, **definitions)
    model.__song_fields__ = fields  # type: ignore[attr-defined]
    return model


def event_model(song: type[BaseModel], name: str = "SongEvent") -> type[BaseModel]:
    """A songs-topic event model carrying ``song`` (like :class:`.events.SongEvent`)."""
    from emergify_contracts.events import SongEventBase

    return create_model(name, __base__=SongEventBase, song=(song, ...))


def event_json_schema(fields: Fields = SONG_FIELDS) -> dict[str, Any]:
    """The JSON Schema of a songs-topic event whose song has ``fields``."""
    return event_model(song_model(fields)).model_json_schema()


# --- Arrow -------------------------------------------------------------------------------


def arrow_schema(fields: Fields = SONG_FIELDS) -> pa.Schema:
    """Schema of every master-dataset file: the lake's song fields, then provenance."""
    import pyarrow as pa  # the services that write or read Parquet depend on it, not contracts

    types = {
        "text": pa.string(),
        "integer": pa.int64(),
        "number": pa.float64(),
        "boolean": pa.bool_(),
        "text_list": pa.list_(pa.string()),
    }
    song = [
        pa.field(f.name, types[f.kind], nullable=not f.required) for f in fields_in("lake", fields)
    ]
    return pa.schema(
        [
            *song,
            pa.field("upload_id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
            pa.field("row", pa.int64(), nullable=False),
        ]
    )


# --- Spark -------------------------------------------------------------------------------

_SPARK_DDL = {
    "text": "string",
    "integer": "bigint",
    "number": "double",
    "boolean": "boolean",
    "text_list": "array<string>",
}


def _quote(name: str) -> str:
    return f"`{name}`"


def spark_song_ddl(fields: Fields = SONG_FIELDS, store: str = "event") -> str:
    """Spark DDL of the song fields ``store`` carries (``name type, ...``)."""
    return ", ".join(f"{_quote(f.name)} {_SPARK_DDL[f.kind]}" for f in fields_in(store, fields))  # type: ignore[arg-type]


def spark_lake_ddl(fields: Fields = SONG_FIELDS) -> str:
    """Spark DDL of a master-dataset file (the Arrow schema in Spark types)."""
    return (
        spark_song_ddl(fields, "lake")
        + ", `upload_id` string, `source` string, `ingested_at` timestamp, `row` bigint"
    )


def spark_event_ddl(fields: Fields = SONG_FIELDS) -> str:
    """Spark DDL of a songs-topic event value. ``ingested_at`` stays text: the speed layer
    converts it with ``try_cast`` so a bad timestamp becomes a reason, not a failed query."""
    song = ", ".join(f"{_quote(f.name)}: {_SPARK_DDL[f.kind]}" for f in fields_in("event", fields))
    return (
        "schema_version int, upload_id string, source string, ingested_at string, "
        f"song struct<{song}>"
    )


def spark_struct(types: ModuleType, fields: Fields = SONG_FIELDS, store: str = "event") -> Any:
    """The song fields ``store`` carries as a ``StructType`` built from ``types`` (the
    caller's ``pyspark.sql.types``)."""
    kinds = {
        "text": types.StringType(),
        "integer": types.LongType(),
        "number": types.DoubleType(),
        "boolean": types.BooleanType(),
        "text_list": types.ArrayType(types.StringType()),
    }
    return types.StructType(
        [
            types.StructField(f.name, kinds[f.kind], nullable=True)
            for f in fields_in(store, fields)  # type: ignore[arg-type]
        ]
    )


# --- SQLAlchemy --------------------------------------------------------------------------


def table_columns(fields: Fields = SONG_FIELDS) -> list[sa.Column[Any]]:
    """The song-field columns of the feature table ``songs`` (``track_id`` the key)."""
    out: list[sa.Column[Any]] = []
    for f in fields_in("table", fields):
        if f.kind == "text":
            kind: Any = sa.String(f.column_length) if f.column_length else sa.Text
        else:
            kind = {
                "integer": sa.Integer,
                "number": sa.Float,
                "boolean": sa.Boolean,
                "text_list": sa.JSON,
            }[f.kind]
        nullable = not (f.required or f.kind == "text_list")
        out.append(sa.Column(f.name, kind, primary_key=f.name == "track_id", nullable=nullable))
    return out


# --- column lists ------------------------------------------------------------------------


def lake_columns(fields: Fields = SONG_FIELDS) -> tuple[str, ...]:
    """Every column of a master-dataset row (the provenance columns last)."""
    return (*(f.name for f in fields_in("lake", fields)), *LAKE_PROVENANCE)


def batch_columns(fields: Fields = SONG_FIELDS) -> tuple[str, ...]:
    """Columns of a cleaned speed-layer micro-batch: the table's song fields, then where
    each record came from."""
    return (*(f.name for f in fields_in("table", fields)), *BATCH_PROVENANCE)


def recommender_columns(fields: Fields = SONG_FIELDS) -> tuple[str, ...]:
    """Columns of ``songs`` the serving layer loads."""
    return (*(f.name for f in fields_in("recommender", fields)), *RECOMMENDER_BOOKKEEPING)
