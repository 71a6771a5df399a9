"""Fixtures of tests/cli/: the stack and the runner, from ``cli_stack``."""

from cli_stack import run, stack

__all__ = ["run", "stack"]
