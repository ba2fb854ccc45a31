"""Judge configuration: one typed object shared by every command, loadable from a YAML/JSON file.

Precedence is defaults < config file < explicit CLI flags, so one file reproduces a setup across
`judge`, `eval`, `serve` and `demo`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltarubric.rm.media import DEFAULT_MAX_INPUT_PIXELS

BackendName = Literal["openai", "vllm", "transformers"]


class SamplingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.0, ge=0.0, le=2.0, description="0 = greedy (the default, for reproducible verdicts).")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int = Field(1024, ge=1, le=32768, description="Per stage.")
    seed: int = Field(0, description="Sampling seed; also derives the random presentation order.")
    top_logprobs: int = Field(5, ge=0, le=20, description="Alternatives kept per generated token; 0 turns p_a off.")


class JudgeConfig(BaseModel):
    """Everything needed to rebuild a judge. Saved next to every run."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        ..., description="HF model id or local checkpoint (transformers/vllm); served model name (openai)."
    )
    backend: BackendName = "transformers"
    judge: str = Field(
        "deltarubric", description="A method in rubrics/prompts: direct | deltarubric | msrl | <benchmark>_official."
    )
    swap: bool = Field(False, description="Judge both orders and aggregate.")
    order: Literal["given", "random"] = Field(
        "given", description="Without swap: show A first ('given') or pick the order from (seed, item id) ('random')."
    )
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    min_pixels: int | None = Field(None, ge=1, description="Per image, passed to the processor.")
    max_pixels: int | None = Field(None, ge=1, description="Per image; larger images are downscaled before sending.")
    max_input_pixels: int = Field(
        DEFAULT_MAX_INPUT_PIXELS,
        ge=1,
        description="Images above this are refused as decompression bombs, before decoding.",
    )
    # openai backend
    base_urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:8000/v1"])
    api_key: str | None = None
    concurrency: int = Field(16, ge=1, description="Requests in flight at once (openai backend).")
    timeout_s: float = Field(600.0, gt=0)
    max_retries: int = Field(3, ge=0)
    # transformers / vllm backends
    device: str = Field("auto", description="'auto' picks cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    batch_size: int = Field(8, ge=1, description="Conversations per generate() call (transformers).")
    vllm_kwargs: dict[str, Any] = Field(default_factory=dict, description="Extra vllm.LLM(...) arguments.")

    @model_validator(mode="after")
    def _check(self) -> JudgeConfig:
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ValueError("min_pixels is larger than max_pixels; lower min_pixels or raise max_pixels")
        from deltarubric.rubrics.prompts import available_methods

        if self.judge not in available_methods():
            raise ValueError(f"unknown judge {self.judge!r}; available: {', '.join(available_methods())}")
        if self.backend == "openai" and not self.base_urls:
            raise ValueError("backend 'openai' needs at least one base URL (--base-url)")
        return self


# Settings that cannot change a verdict (where and how fast it is computed): left out of run and cache identities, so
# a run can resume against another server or batch size and the server's cache survives such changes.
OPERATIONAL_FIELDS = frozenset(
    {"base_urls", "api_key", "concurrency", "timeout_s", "max_retries", "device", "batch_size"}
)


def verdict_identity(config: JudgeConfig) -> dict[str, Any]:
    """The settings that determine a verdict."""
    return config.model_dump(exclude=set(OPERATIONAL_FIELDS))


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
    """Defaults, then the file, then non-None overrides. `sampling` overrides merge key by key."""
    data = load_config_file(file) if file else {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key == "sampling":
            data["sampling"] = {**(data.get("sampling") or {}), **{k: v for k, v in value.items() if v is not None}}
        else:
            data[key] = value
    return JudgeConfig.model_validate(data)
