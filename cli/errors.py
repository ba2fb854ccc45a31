"""User errors of the command line: printed as one line, without a traceback."""


class CLIError(Exception):
    """A usage error the command itself found (flags that do not fit together): one line, exit code 2."""
