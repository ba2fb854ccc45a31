"""What a command shows on stderr while it waits (loading a model takes seconds even for a tiny one)."""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager, nullcontext


def status(message: str, *, say_when_piped: bool = False) -> AbstractContextManager[object]:
    """A spinner on stderr while the block runs, when stderr is a terminal. Piped, nothing, or with `say_when_piped`
    one line first (a server's or a long run's log then shows what the first seconds went to)."""
    if not sys.stderr.isatty():
        if say_when_piped:
            print(message + "...", file=sys.stderr, flush=True)
        return nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(message + "...")
