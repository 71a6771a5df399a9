"""Request dependencies, as typed aliases so routes read like sentences."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from emergify_stream.runtime import StreamRuntime


def get_runtime(request: Request) -> StreamRuntime:
    """The process's runtime, created by the app's lifespan."""
    return request.app.state.runtime


Runtime = Annotated[StreamRuntime, Depends(get_runtime)]
