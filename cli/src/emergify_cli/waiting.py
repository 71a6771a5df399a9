"""Waiting until a condition holds: the one polling loop of the repository, used by the stack
the command starts, by the tests (through ``testkit``) and by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 30.0, what: str = "condition", interval: float = 0.1
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something truthy; return that.

    Raises :class:`TimeoutError` naming ``what`` (and the last value) once ``timeout`` seconds
    have passed. An exception ``check`` raises (that a process is still alive, say) ends the
    wait at once.
    """
    deadline = time.monotonic() + timeout
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
