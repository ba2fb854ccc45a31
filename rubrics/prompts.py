"""Loading judge methods from the YAML/Jinja files in `rubrics/prompts/` and rendering them to message text.

A method is a system prompt plus ordered stages; each stage is one user turn, names the parser for the model's reply
and declares what the stage produces (`checklist` or `verdict`), which is what the judge acts on. The file is checked
when it loads: text that is not YAML, unknown keys, an unknown parser, a product its parser does not read, two stages
of one name, or a method whose last stage is not its one verdict stage are errors naming the file and the stage.
Media are placed where the template prints a media variable: rendering yields text with numbered markers, which
`split_media` turns into interleaved text and media parts.
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
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deltarubric.rubrics.parsing import PARSERS, Product

PROMPTS_DIR = Path(__file__).parent / "prompts"
_MARKER = "\x00{}\x00"
_MARKER_RE = re.compile("\x00(\\d+)\x00")


@dataclass(frozen=True)
class Stage:
    name: str
    parser: str
    produces: Product  # 'checklist': later stages are shown its items; 'verdict': the method's answer (last stage)
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


class _StageSpec(BaseModel):
    """One stage as written in a prompt file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    parser: str
    produces: Product
    user: str
    reply: str | None = None

    @field_validator("parser")
    @classmethod
    def _known_parser(cls, v: str) -> str:
        if v not in PARSERS:
            raise ValueError(f"unknown parser {v!r}; available: {', '.join(sorted(PARSERS))}")
        return v

    @model_validator(mode="after")
    def _parser_reads_the_product(self) -> _StageSpec:
        if PARSERS[self.parser].produces != self.produces:
            raise ValueError(
                f"parser {self.parser!r} reads a {PARSERS[self.parser].produces}, but the stage declares "
                f"produces: {self.produces}"
            )
        return self


class _MethodSpec(BaseModel):
    """A prompt file: what `load_method` checks before compiling any template."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int
    system: str
    task_types: list[str] | None = None
    stages: list[_StageSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _stage_names_differ(self) -> _MethodSpec:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):  # raw outputs and usage are keyed '<order>/<stage>'
            raise ValueError(f"stage names must differ (stages: {names})")
        return self

    @model_validator(mode="after")
    def _one_verdict_stage_last(self) -> _MethodSpec:
        verdicts = [s.name for s in self.stages if s.produces == "verdict"]
        if [s.produces for s in self.stages].count("verdict") != 1 or self.stages[-1].produces != "verdict":
            raise ValueError(
                f"the last stage, and only it, must declare produces: verdict (verdict stages: {verdicts or 'none'})"
            )
        return self


def available_methods(prompts_dir: Path = PROMPTS_DIR) -> list[str]:
    return sorted(p.stem for p in prompts_dir.glob("*.yaml") if not p.name.startswith("_"))  # _* are shared parts


def check_method(name: str, prompts_dir: Path = PROMPTS_DIR) -> str:
    """`name` when it names a judge method whose prompt file loads, else a ValueError that lists the available judges
    (or says what is wrong in the file). The one check for a judge name, wherever one comes in."""
    load_method(name, prompts_dir)
    return name


def _read_spec(path: Path) -> _MethodSpec:
    """The prompt file, checked; a ValueError names the file and, for a stage's problem, the stage."""
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    try:
        return _MethodSpec.model_validate(raw)
    except ValidationError as e:
        stages = raw.get("stages") if isinstance(raw, dict) else None
        problems = []
        for err in e.errors():
            loc: list[object] = list(err["loc"])
            if loc[:1] == ["stages"] and len(loc) > 1 and isinstance(stages, list) and isinstance(loc[1], int):
                stage = stages[loc[1]] if isinstance(stages[loc[1]], dict) else {}
                loc[:2] = [f"stage {stage.get('name', loc[1])!r}"]
            msg = "unknown key" if err["type"] == "extra_forbidden" else str(err["msg"]).removeprefix("Value error, ")
            where = ".".join(str(x) for x in loc)
            problems.append(f"{where}: {msg}" if where else msg)
        raise ValueError(f"{path}: {'; '.join(problems)}") from None


@lru_cache(maxsize=None)
def load_method(name: str, prompts_dir: Path = PROMPTS_DIR) -> Method:
    path = prompts_dir / f"{name}.yaml"
    if name not in available_methods(prompts_dir):  # a listed name, not any path to a YAML file
        raise ValueError(f"unknown judge {name!r}; available: {', '.join(available_methods(prompts_dir))}")
    spec = _read_spec(path)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir),
        undefined=jinja2.StrictUndefined,  # a misspelt variable fails the golden test instead of rendering empty
        keep_trailing_newline=False,
        autoescape=False,
    )
    stages = tuple(
        Stage(
            s.name,
            s.parser,
            s.produces,
            env.from_string(s.user),
            env.from_string(s.reply) if s.reply is not None else None,
        )
        for s in spec.stages
    )
    words = yaml.safe_load((prompts_dir / "_words.yaml").read_text())
    digest = hashlib.sha256(path.read_bytes())
    for shared in sorted(prompts_dir.glob("_*")):
        digest.update(shared.read_bytes())
    system = env.from_string(spec.system).render().strip()
    task_types = tuple(spec.task_types or words["media_word"])
    return Method(spec.name, spec.version, system, stages, words, task_types, digest.hexdigest())


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
