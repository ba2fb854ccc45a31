"""`deltarubric serve`: the reward server over one judge. Its flags: the judge's, and one per ServerSettings field."""

from __future__ import annotations

from typing import Annotated

import typer

from deltarubric.app.settings import ServerSettings
from deltarubric.cli.options import JUDGE, ModelOptions, model_options
from deltarubric.cli.progress import status
from deltarubric.rm.config import JudgeConfig
from deltarubric.rm.media import DEFAULT_MAX_PIXELS

_S = "Server"
SERVER = ModelOptions(
    ServerSettings,
    panels={"": _S},
    # The server decodes images to the judge's own limits: --max-pixels and --max-input-pixels, in the judge panel.
    exclude=frozenset({"max_pixels", "max_input_pixels"}),
    default_text={"served_model_name": "--model"},
)


@model_options(config=JUDGE, settings=SERVER)
def serve(
    config: JudgeConfig,
    settings: ServerSettings,
    host: Annotated[str, typer.Option(help="Interface to bind.", rich_help_panel=_S)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=_S)] = 8000,
) -> None:
    """Serve the judge to RL trainers: /get_reward (OpenRLHF), /v1/judge, /v1/rewards, OpenAI-compatible
    /v1/chat/completions and /v1/models, /health and /metrics. See docs/server.md."""
    from deltarubric.app.server import build_app, run_server
    from deltarubric.rm.judge import Judge

    update = {"max_input_pixels": config.max_input_pixels, "max_pixels": config.max_pixels or DEFAULT_MAX_PIXELS}
    if "served_model_name" not in settings.model_fields_set:
        update["served_model_name"] = config.model
    settings = settings.model_copy(update=update)
    # On SIGTERM uvicorn stops accepting, in-flight requests finish and the queue drains, all within the drain
    # timeout; a backend that never returns cannot hold the process past it (see app/edge.py).
    with status(f"loading {config.model} ({config.compute.backend})", say_when_piped=True):
        judge = Judge(config)
    run_server(build_app(judge, settings), host=host, port=port)
