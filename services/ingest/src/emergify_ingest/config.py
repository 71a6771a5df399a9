"""Settings of the ingest service (environment prefix ``EMERGIFY_``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field

from emergify_contracts.settings import EmergifySettings

MiB = 1024 * 1024


class Settings(EmergifySettings):
    """Everything the ingest service reads from the environment, with embedded-stack defaults."""

    max_upload_bytes: int = Field(
        50 * MiB, ge=1, description="Largest request body accepted (JSON or multipart CSV)."
    )
    max_rows: int = Field(200_000, ge=1, description="Most data records in one upload.")
    chunk_rows: int = Field(
        5_000, ge=1, description="Accepted songs per master-dataset file and Kafka flush."
    )
    csv_validation: Literal["arrow", "columns", "rows"] = Field(
        "arrow",
        description="'arrow': the CSV read whole by pyarrow's reader and validated with Arrow "
        "kernels (files pyarrow cannot read as Python's csv module does go the 'columns' way); "
        "'columns': read by the csv module, validated a block at a time with Arrow kernels; "
        "'rows': every row one by one. Rows the kernels do not pass are checked one by one. "
        "Same verdicts, row numbers and messages in every mode.",
    )
    max_field_bytes: int = Field(
        MiB, ge=1024, description="Largest CSV field; a bigger one is a row error."
    )
    max_reported_rejections: int = Field(
        1_000, ge=0, description="Rejected rows listed in a response; the rest are counted."
    )
    kafka_linger_ms: int = Field(20, ge=0)
    kafka_max_batch_bytes: int = Field(512 * 1024, ge=16 * 1024)
    kafka_request_timeout_ms: int = Field(
        15_000,
        ge=1_000,
        description="Bound on every broker wait: a send fails (503) instead of hanging.",
    )
    kafka_compression: Literal["auto", "none", "lz4"] = Field(
        "auto",
        description="'auto' uses lz4 when aiokafka's lz4 codec (cramjam) is installed, else none.",
    )
    kafka_connect_backoff_s: float = Field(
        2.0, gt=0, description="Pause between attempts to reach the broker at start-up."
    )
    health_probe_timeout_s: float = Field(2.0, gt=0)
    retry_after_s: int = Field(
        10, ge=1, description="Retry-After sent with 503 when the broker is unavailable."
    )


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
