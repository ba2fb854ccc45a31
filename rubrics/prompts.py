"""Loading judge methods from the YAML/Jinja files in `rubrics/prompts/` and rendering them to message text.

A method is a system prompt plus ordered stages; each stage is one user turn and names the parser for the model's
reply. Media are placed where the template prints a media variable: rendering yields text with numbered markers,
which `split_media` turns into interleaved text and media parts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import yaml

PROMPTS_DIR = Path(__file__).parent / "prompts"
_MARKER = "\x00{}\x00"
_MARKER_RE = re.compile("\x00(\\d+)\x00")


@dataclass(frozen=True)
class Stage:
    name: str
    parser: str
    user: jinja2.Template
    reply: jinja2.Template | None = None  # how the model's reply is written back into the conversation; None = as is


@dataclass(frozen=True)
class Method:
    name: str
    version: int
    system: str
    stages: tuple[Stage, ...]
    words: dict[str, dict[str, str]]  # from _words.yaml: `noun` per candidate kind, `media_word` per task type
    task_types: tuple[str, ...]  # what the prompt is written for; a request of another type is refused
    sha256: str  # of the YAML file and every shared file it can use, for run records


def available_methods(prompts_dir: Path = PROMPTS_DIR) -> list[str]:
    return sorted(p.stem for p in prompts_dir.glob("*.yaml") if not p.name.startswith("_"))  # _* are shared parts


@lru_cache(maxsize=None)
def load_method(name: str, prompts_dir: Path = PROMPTS_DIR) -> Method:
    path = prompts_dir / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown judge {name!r}; available: {', '.join(available_methods(prompts_dir))}")
    spec = yaml.safe_load(path.read_text())
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir),
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the golden test instead of rendering empty
        keep_trailing_newline=False,
        autoescape=False,
    )
    stages = tuple(
        Stage(s["name"], s["parser"], env.from_string(s["user"]), env.from_string(s["reply"]) if "reply" in s else None)
        for s in spec["stages"]
    )
    words = yaml.safe_load((prompts_dir / "_words.yaml").read_text())
    digest = hashlib.sha256(path.read_bytes())
    for shared in sorted(prompts_dir.glob("_*")):
        digest.update(shared.read_bytes())
    system = env.from_string(spec["system"]).render().strip()
    task_types = tuple(spec.get("task_types") or words["media_word"])
    return Method(spec["name"], int(spec["version"]), system, stages, words, task_types, digest.hexdigest())


def media_marker(index: int) -> str:
    """The text a template prints for media item `index`; replaced by the media part itself."""
    return _MARKER.format(index)


def render(template: jinja2.Template, context: dict[str, Any]) -> str:
    return template.render(**context).strip()


def split_media(text: str) -> list[str | int]:
    """Rendered text -> alternating text chunks (str) and media indexes (int), empty chunks dropped."""
    out: list[str | int] = []
    for i, chunk in enumerate(_MARKER_RE.split(text)):
        if i % 2:
            out.append(int(chunk))
        elif chunk.strip():
            out.append(chunk)
    return out
