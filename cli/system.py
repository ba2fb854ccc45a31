"""`deltarubric make-tiny-model` and `deltarubric env`: tools for tests, CI and bug reports."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer


def make_tiny_model_cmd(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the checkpoint into.")],
    seed: Annotated[int, typer.Option(help="Weight initialisation seed.")] = 0,
) -> None:
    """Write a tiny random-weight Qwen3-VL checkpoint that loads offline with from_pretrained (for tests and CI)."""
    from deltarubric.rm.tiny import make_tiny_model

    print(make_tiny_model(out_dir, seed=seed))


def env() -> None:
    """Print versions and capabilities, for bug reports."""
    from importlib import metadata

    from transformers.utils import is_torchvision_available

    info = {}
    for pkg in ("deltarubric", "torch", "transformers", "pillow", "pydantic", "httpx", "fastapi", "vllm", "openai"):
        try:
            info[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            info[pkg] = None
    import torch

    info |= {
        "python": sys.version.split()[0],
        "cuda": torch.cuda.is_available(),
        "torchvision (video)": is_torchvision_available(),
    }
    print(json.dumps(info, indent=2))
