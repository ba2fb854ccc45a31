"""`deltarubric demo`: the Gradio page for judging one pair by hand."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from deltarubric.cli.options import judge_options
from deltarubric.rm.config import JudgeConfig

_D = "Demo"


@judge_options
def demo(
    config: JudgeConfig,
    host: Annotated[
        str, typer.Option(help="Interface to bind; 127.0.0.1 keeps the page on this machine.", rich_help_panel=_D)
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=_D)] = 7860,
    examples_dir: Annotated[
        Optional[Path],
        typer.Option(help="Folder of the example images.", rich_help_panel=_D, show_default="the shipped examples"),
    ] = None,
) -> None:
    r"""Open the Gradio demo: judge one pair in the browser, stage by stage.

    Needs gradio: pip install "deltarubric\[demo]" (in a checkout: pip install -e ".\[demo]").

    Example: deltarubric demo -m Qwen/Qwen3-VL-8B-Instruct --backend openai --base-url http://127.0.0.1:8000/v1
    --host 127.0.0.1 --port 7860. See docs/demo.md.
    """
    from deltarubric.app.demo import launch_demo

    launch_demo(config, host=host, port=port, examples_dir=examples_dir)
