"""Real HTTP servers for tests: an ASGI app served by uvicorn in a thread on a free port.

Importable as ``servers`` (pytest puts tests/ on the path).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import uvicorn
from testkit import wait_for

from emergify_cli.broker import free_port


class ServedApp:
    """An ASGI app served by uvicorn in a thread on a free port (or on ``port``).

    ``config`` goes to ``uvicorn.Config`` (e.g. ``lifespan="auto"``,
    ``timeout_graceful_shutdown=3``); by default the lifespan runs and logs are warnings only.
    """

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.app = app
        self.port = port or free_port()
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServedApp:
        """Start serving; return once uvicorn accepts connections (fail after 30 s)."""
        self.thread.start()

        def started() -> bool:
            assert self.thread.is_alive(), f"the server on port {self.port} stopped"
            return self.server.started

        wait_for(started, 30, f"the server on port {self.port} to start", interval=0.02)
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (running the lifespan shutdown) and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout=15)


@contextmanager
def serving() -> Iterator[Callable[..., ServedApp]]:
    """``with serving() as serve: serve(app, port=None, **config)``: started servers, all
    stopped when the block ends, the last started first (so callers outlive what they call)."""
    with ExitStack() as stack:

        def serve(app: Any, port: int | None = None, **config: Any) -> ServedApp:
            served = ServedApp(app, port, **config).start()
            stack.callback(served.stop)
            return served

        yield serve
