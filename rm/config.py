"""Judge configuration: one typed object shared by every command, loadable from a YAML/JSON file.

Two parts: what decides a verdict (model, judge, prompts, presentation, sampling, pixels, precision) at the top level,
and how it is computed (`compute`: engine, servers, devices, concurrency). Run and cache identities are the first part
alone (`verdict_identity`), so a run resumes against another server or batch size and the server's verdict cache
survives such changes.

Precedence is defaults < config file < explicit overrides (CLI flags), so one file reproduces a setup across
`judge`, `eval`, `serve` and `demo`. A value that does not validate raises `ConfigError`, whose problems say where
the value came from (the file and line, or an override) and, for an unknown key, the nearest known one.

The command line makes one flag of each field (cli/options.py). A field's `json_schema_extra` may name its flags
(`flags`, when not `--field-name`), an environment variable (`envvar`) and, for a default of None, what not setting
it means (`default_text`); fields holding a mapping are set in a config file only.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS, DEFAULT_MAX_PIXELS
from deltarubric.rm.validation import Loc, field_problems

BackendName = Literal["openai", "vllm", "transformers"]
COMPUTE = "compute"  # the section left out of verdict identities


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (the default, for reproducible verdicts).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling: the probability mass sampled from.")
    max_tokens: int = Field(1024, ge=1, le=32768, description="New tokens per stage.")
    seed: int = Field(0, description="Sampling seed; also draws the random presentation order.")
    top_logprobs: int = Field(5, ge=0, le=20, description="Alternatives kept per generated token; 0 turns p_a off.")


class ComputeConfig(BaseModel):
    """How and where verdicts are computed. Nothing here is meant to change a verdict, so none of it is part of a run's
    or a cache's identity.

    The backend choice is here too: the same weights give the same verdict through `vllm serve` + openai, in-process
    vLLM or transformers, and a run started on one may resume on another (with `--model` naming the same checkpoint).
    Its engine arguments (`vllm_kwargs`: memory, parallelism, media per prompt) are here for the same reason; an
    argument that does change the weights (`quantization`) belongs in the model's name, i.e. a quantized checkpoint.
    Precision (`dtype`) is not here: bf16 and fp32 logits can pick different greedy tokens.
    """

    model_config = ConfigDict(extra="forbid")

    backend: BackendName = Field(
        "transformers",
        description="openai (any OpenAI-compatible server) | vllm (in-process, GPU) | transformers (local).",
    )
    base_urls: list[str] = Field(
        default_factory=lambda: ["http://127.0.0.1:8000/v1"],
        description="OpenAI-compatible base URL (openai); repeat for replicas, used in turn.",
        json_schema_extra={"flags": ["--base-url"]},
    )
    api_key: str | None = Field(
        None,
        description="Bearer token for the servers (openai).",
        json_schema_extra={"envvar": "DELTARUBRIC_API_KEY", "default_text": "none"},
    )
    concurrency: int = Field(16, ge=1, description="Requests in flight at once (openai).")
    timeout_s: float = Field(
        600.0, gt=0, description="Seconds per HTTP request (openai).", json_schema_extra={"flags": ["--timeout"]}
    )
    max_retries: int = Field(3, ge=0, description="Retries on 408, 429, 500, 502-504 and connection errors (openai).")
    device: str = Field("auto", description="auto | cpu | cuda[:N] (transformers); auto picks cuda when available.")
    batch_size: int = Field(8, ge=1, description="Conversations per generate() call (transformers).")
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vllm.LLM(...) arguments (vllm).")

    @model_validator(mode="after")
    def _check(self) -> ComputeConfig:
        if self.backend == "openai" and not self.base_urls:
            raise ValueError("backend 'openai' needs at least one base URL (--base-url)")
        return self


class JudgeConfig(BaseModel):
    """Everything needed to rebuild a judge. Saved next to every run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ...,
        description="HF model id or local checkpoint (transformers/vllm); the served model name (openai).",
        json_schema_extra={"flags": ["--model", "-m"]},
    )
    judge: str = Field(
        "deltarubric",
        description="A method in rubrics/prompts: direct | deltarubric | msrl | <benchmark>_official.",
        json_schema_extra={"flags": ["--judge", "-j"]},
    )
    swap: bool = Field(False, description="Judge both presentation orders (A first, B first) and aggregate.")
    presentation: Literal["given", "random"] = Field(
        "given",
        description="Without swap: show A first ('given') or draw the order from the seed and the item id ('random').",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Generation settings, per stage.")
    min_pixels: int | None = Field(
        None,
        ge=1,
        description="Per image: smaller images are upscaled by the processor.",
        json_schema_extra={"default_text": "the processor's own"},
    )
    max_pixels: int | None = Field(
        None,
        ge=1,
        description="Per image: larger images are downscaled before sending.",
        json_schema_extra={"default_text": f"the processor's own, {DEFAULT_MAX_PIXELS} for Qwen3-VL"},
    )
    max_input_pixels: int = Field(
        DEFAULT_MAX_INPUT_PIXELS,
        ge=1,
        description="Images above this are refused as decompression bombs, before decoding.",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weights' precision (transformers); auto: bfloat16 on GPU, float32 on CPU."
    )
    compute: ComputeConfig = Field(
        default_factory=ComputeConfig, description="How verdicts are computed; not part of their identity."
    )

    @field_validator("judge")
    @classmethod
    def _known_judge(cls, judge: str) -> str:
        from deltarubric.rubrics.prompts import check_method

        return check_method(judge)

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels; lower min_pixels or raise max_pixels")
        return self


def verdict_identity(config: JudgeConfig) -> dict[str, Any]:
    """The settings that determine a verdict: everything but the compute section."""
    return config.model_dump(exclude={COMPUTE})


@dataclass(frozen=True)
class ConfigProblem:
    """One value that does not validate: where it is (`loc`), what is wrong, and where it came from: `file` (and its
    `line`, for YAML) when the config file set it, None when an override did or when it is missing."""

    loc: Loc
    message: str
    file: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}{f' line {self.line}' if self.line else ''}: " if self.file else ""
        key = ".".join(map(str, self.loc))
        return f"{where}{key + ': ' if key else ''}{self.message}"


class ConfigError(ValueError):
    """A configuration that does not validate; `problems` says what and where, `str()` in one line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(map(str, problems)))
        self.problems = problems


def _key_lines(node: yaml.Node, prefix: Loc = ()) -> dict[Loc, int]:
    """The line (1-based) of every mapping key of a composed YAML document, by its path."""
    lines: dict[Loc, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = (*prefix, str(key.value))
            lines[path] = key.start_mark.line + 1
            lines |= _key_lines(value, path)
    return lines


def read_config_file(path: str | Path) -> tuple[dict[str, Any], dict[Loc, int]]:
    """A YAML or JSON config file as a plain dict (validated when merged into JudgeConfig), and the line of each key
    (YAML only). Unreadable files raise ConfigError naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError([ConfigProblem((), f"cannot read the config file: {e.strerror or e}", str(path))]) from None
    lines: dict[Loc, int] = {}
    try:
        if path.suffix == ".json":
            data = json.loads(text)
        else:  # one parse: the node tree gives each key's line, the same tree the values are built from
            loader = yaml.SafeLoader(text)
            try:
                node = loader.get_single_node()
                data = loader.construct_document(node) if node is not None else None
            finally:
                loader.dispose()
            lines = _key_lines(node) if node is not None else {}
    except json.JSONDecodeError as e:
        raise ConfigError([ConfigProblem((), f"not valid JSON: {e.msg}", str(path), e.lineno)]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigProblem((), f"not valid YAML: {problem}", str(path), line)]) from None
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem((), "a config file must hold a mapping of option names to values", str(path))])
    return data, lines


def _has(data: Any, loc: Loc) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def build_config(file: str | Path | None = None, **overrides: Any) -> JudgeConfig:
    """Defaults, then the file, then non-None overrides. Section overrides (`sampling`, `compute`) merge key by key.
    Raises ConfigError, each problem naming the file and line of a value the file set."""
    data, lines = read_config_file(file) if file else ({}, {})
    file_data = copy.deepcopy(data)
    given: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and key in ("sampling", COMPUTE):
            if not isinstance(data.get(key) or {}, dict):
                continue  # the file's section is no mapping: its own error, naming the file and line, says so
            given[key] = {k: v for k, v in value.items() if v is not None}
            data[key] = {**(data.get(key) or {}), **given[key]}
        else:
            given[key] = data[key] = value
    try:
        return JudgeConfig.model_validate(data)
    except ValidationError as e:
        problems = []
        for value_loc, loc, message in field_problems(e, JudgeConfig):
            from_file = file is not None and _has(file_data, value_loc) and not _has(given, value_loc)
            line = max((n for k, n in lines.items() if value_loc[: len(k)] == k), default=None) if from_file else None
            problems.append(ConfigProblem(loc, message, str(file) if from_file else None, line))
        raise ConfigError(problems) from None
