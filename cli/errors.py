"""How a command ends badly: a usage error (one line, exit 2) or a run that ran but is broken (exit 1)."""

import sys

import typer


class CLIError(Exception):
    """A usage error the command itself found (flags that do not fit together): one line, exit code 2."""


def fail(message: str) -> typer.Exit:
    """A run that ran but is broken: its message on stderr, exit code 1 (usage errors are 2)."""
    print(f"Error: {message}", file=sys.stderr)
    return typer.Exit(1)
