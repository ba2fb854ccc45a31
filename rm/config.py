"""Judge configuration: one typed object shared by every command, loadable from a YAML/JSON file.

Two parts: what decides a verdict (model, judge, prompts, presentation, sampling, pixels, precision) at the top level,
and how it is computed (`compute`: engine, servers, devices, concurrency). Run and cache identities are the first part
alone (`verdict_identity`), so a run resumes against another server or batch size and the server's verdict cache
survives such changes.

Precedence is defaults < config file < explicit overrides (CLI flags), so one file reproduces a setup across
`judge`, `eval`, `serve` and `demo`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS

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
        description="OpenAI-compatible base URLs (openai); several are replicas, used in turn.",
    )
    api_key: str | None = Field(None, description="Bearer token for the servers (openai).")
    concurrency: int = Field(16, ge=1, description="Requests in flight at once (openai).")
    timeout_s: float = Field(600.0, gt=0, description="Seconds per HTTP request (openai).")
    max_retries: int = Field(3, ge=0, description="Retries on 5xx, 429 and connection errors (openai).")
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
        ..., description="HF model id or local checkpoint (transformers/vllm); the served model name (openai)."
    )
    judge: str = Field(
        "deltarubric", description="A method in rubrics/prompts: direct | deltarubric | msrl | <benchmark>_official."
    )
    swap: bool = Field(False, description="Judge both presentation orders (A first, B first) and aggregate.")
    presentation: Literal["given", "random"] = Field(
        "given",
        description="Without swap: show A first ('given') or draw the order from the seed and the item id ('random').",
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Generation settings, per stage.")
    min_pixels: int | None = Field(None, ge=1, description="Per image, passed to the processor.")
    max_pixels: int | None = Field(None, ge=1, description="Per image; larger images are downscaled before sending.")
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
        from deltarubric.rubrics.prompts import available_methods

        if judge not in available_methods():
            raise ValueError(f"unknown judge {judge!r}; available: {', '.join(available_methods())}")
        return judge

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels; lower min_pixels or raise max_pixels")
        return self


def verdict_identity(config: JudgeConfig) -> dict[str, Any]:
    """The settings that determine a verdict: everything but the compute section."""
    return config.model_dump(exclude={COMPUTE})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a plain dict (validated when merged into JudgeConfig)."""
    text = Path(path).read_text()
    data = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a config file must hold a mapping of option names to values")
    return data


def build_config(file: str | Path | None = None, **overrides: Any) -> JudgeConfig:
    """Defaults, then the file, then non-None overrides. Section overrides (`sampling`, `compute`) merge key by key."""
    data = load_config_file(file) if file else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, dict) and key in ("sampling", COMPUTE):
            data[key] = {**(data.get(key) or {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            data[key] = value
    return JudgeConfig.model_validate(data)
