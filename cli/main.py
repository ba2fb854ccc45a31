"""The `deltarubric` console script: the typer app with every command, and `main()`, which turns user errors into
one line on stderr (exit code 2) and sets up logging."""

from __future__ import annotations

import logging
import os
import sys

import typer
from pydantic import ValidationError

from deltarubric.cli import data, demo, eval, judge, serve, system, train
from deltarubric.cli.errors import CLIError
from deltarubric.rm.media import MediaError

app = typer.Typer(
    name="deltarubric",
    help="Generative multimodal reward models: judge preference pairs with a Qwen3-VL model.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command(no_args_is_help=True)(judge.judge)
app.command()(serve.serve)
app.command()(demo.demo)
app.add_typer(eval.app, name="eval")
app.add_typer(train.app, name="train")
app.add_typer(data.app, name="data")
app.command("make-tiny-model")(system.make_tiny_model_cmd)
app.command()(system.env)


def main() -> None:
    logging.basicConfig(level=os.environ.get("DELTARUBRIC_LOG_LEVEL", "WARNING").upper(), stream=sys.stderr)
    try:
        app()
    except (CLIError, ValidationError, MediaError, ValueError, OSError, ImportError) as e:  # user errors, one line each
        if os.environ.get("DELTARUBRIC_DEBUG"):
            raise
        msg = str(e)
        if isinstance(e, OSError) and e.filename is not None:  # '[Errno 2] No such file...' says less than this
            msg = f"{e.filename}: {e.strerror.lower() if e.strerror else msg}"
        if isinstance(e, ValidationError):
            msg = "; ".join(
                f"{'.'.join(map(str, err['loc'])) or e.title}: {err['msg'].removeprefix('Value error, ')}"
                for err in e.errors()
            )
        print(f"Error: {msg}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
