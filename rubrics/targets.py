"""Training targets as data (`rubrics/targets.yaml`): the text a judge should write for a labelled pair.

They live beside the prompts so the format a model is trained to write and the parsers that read it at inference are
kept together; tests check that every target parses back to its label.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

TARGETS_FILE = Path(__file__).parent / "targets.yaml"


@cache
def _templates() -> dict[str, jinja2.Template]:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=False)
    return {name: env.from_string(text) for name, text in yaml.safe_load(TARGETS_FILE.read_text()).items()}


def render_target(name: str, **variables: Any) -> str:
    """Render target `name` (caption_question | verdict | verdict_only | msrl) with the given variables."""
    return _templates()[name].render(**variables).strip()
