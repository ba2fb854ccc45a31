"""Judge options declared once and attached to every command (judge, serve, and later eval and demo).

`@judge_options` adds these flags to a command and hands it a validated `JudgeConfig` built as
defaults < `--config` file < flags given on the command line.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from deltarubric.rm.config import ComputeConfig, JudgeConfig, SamplingConfig, build_config
from deltarubric.rm.media import DEFAULT_MAX_PIXELS

_P = "Judge options"
_S = "Sampling"


def _default(value: object) -> str:
    """A help suffix naming a default. The bracket is escaped: typer renders help with rich, which would take an
    unescaped `[default: 0]` for a markup tag and silently drop it."""
    return f"  \\[default: {value}]"


_JUDGE = {n: f.default for n, f in JudgeConfig.model_fields.items()}  # one source for the defaults shown
_COMPUTE = {n: f.default for n, f in ComputeConfig.model_fields.items()}
_SAMPLE = {n: f.default for n, f in SamplingConfig.model_fields.items()}

# typer needs Optional[...] spelled out for flags whose default is None (None = "not given on the command line"), so
# typer cannot show the defaults itself: each help text names its default from JudgeConfig.
JUDGE_OPTIONS: dict[str, Any] = {
    "config": Annotated[
        Optional[Path], typer.Option(help="YAML/JSON file of judge options; flags override it.", rich_help_panel=_P)
    ],
    "model": Annotated[
        Optional[str],
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint path or HF id; served model name for --backend openai.",
            rich_help_panel=_P,
        ),
    ],
    "backend": Annotated[
        Optional[str],
        typer.Option(help="openai | vllm | transformers" + _default(_COMPUTE["backend"]), rich_help_panel=_P),
    ],
    "judge": Annotated[
        Optional[str],
        typer.Option(
            "--judge", "-j", help="direct | deltarubric | msrl" + _default(_JUDGE["judge"]), rich_help_panel=_P
        ),
    ],
    "swap": Annotated[
        Optional[bool],
        typer.Option(
            "--swap/--no-swap",
            help="Judge both orders and aggregate." + _default("swap" if _JUDGE["swap"] else "no-swap"),
            rich_help_panel=_P,
        ),
    ],
    "presentation": Annotated[
        Optional[str],
        typer.Option(
            help="Without --swap: 'given' or 'random' (seeded by --seed and item id)."
            + _default(_JUDGE["presentation"]),
            rich_help_panel=_P,
        ),
    ],
    "base_url": Annotated[
        Optional[list[str]],
        typer.Option(
            help="OpenAI-compatible base URL; repeat for replicas."
            + _default(", ".join(ComputeConfig.model_fields["base_urls"].default_factory())),
            rich_help_panel=_P,
        ),
    ],  # type: ignore[misc,call-arg]
    "api_key": Annotated[
        Optional[str],
        typer.Option(
            envvar="DELTARUBRIC_API_KEY",
            help="Bearer token for --backend openai." + _default("none"),
            rich_help_panel=_P,
        ),
    ],
    "concurrency": Annotated[
        Optional[int],
        typer.Option(help="Requests in flight (openai)." + _default(_COMPUTE["concurrency"]), rich_help_panel=_P),
    ],
    "timeout": Annotated[
        Optional[float],
        typer.Option(help="Seconds per HTTP request (openai)." + _default(_COMPUTE["timeout_s"]), rich_help_panel=_P),
    ],
    "max_retries": Annotated[
        Optional[int],
        typer.Option(
            help="Retries on 5xx/429/connection errors (openai)." + _default(_COMPUTE["max_retries"]),
            rich_help_panel=_P,
        ),
    ],
    "device": Annotated[
        Optional[str],
        typer.Option(help="auto | cpu | cuda[:N] (transformers)." + _default(_COMPUTE["device"]), rich_help_panel=_P),
    ],
    "dtype": Annotated[
        Optional[str],
        typer.Option(
            help="auto | float32 | bfloat16 | float16 (transformers)." + _default(_JUDGE["dtype"]), rich_help_panel=_P
        ),
    ],
    "batch_size": Annotated[
        Optional[int],
        typer.Option(
            help="Conversations per generate call (transformers)." + _default(_COMPUTE["batch_size"]),
            rich_help_panel=_P,
        ),
    ],
    "min_pixels": Annotated[
        Optional[int],
        typer.Option(
            help="Minimum pixels per image after resizing." + _default("the model processor's own"), rich_help_panel=_P
        ),
    ],
    # serve decodes to DEFAULT_MAX_PIXELS when this is not given; other commands leave it to the processor, whose own
    # maximum for Qwen3-VL is the same number.
    "max_pixels": Annotated[
        Optional[int],
        typer.Option(
            help="Maximum pixels per image; larger ones are downscaled."
            + _default(f"{DEFAULT_MAX_PIXELS}, Qwen3-VL's own maximum"),
            rich_help_panel=_P,
        ),
    ],
    "max_input_pixels": Annotated[
        Optional[int],
        typer.Option(
            help="Images above this are refused before decoding (bombs)." + _default(_JUDGE["max_input_pixels"]),
            rich_help_panel=_P,
        ),
    ],
    "temperature": Annotated[
        Optional[float], typer.Option(help="0 = greedy." + _default(_SAMPLE["temperature"]), rich_help_panel=_S)
    ],
    "top_p": Annotated[
        Optional[float], typer.Option(help="Nucleus sampling mass." + _default(_SAMPLE["top_p"]), rich_help_panel=_S)
    ],
    "max_tokens": Annotated[
        Optional[int], typer.Option(help="Per stage." + _default(_SAMPLE["max_tokens"]), rich_help_panel=_S)
    ],
    "seed": Annotated[
        Optional[int],
        typer.Option(help="Sampling seed and order seed." + _default(_SAMPLE["seed"]), rich_help_panel=_S),
    ],
    "top_logprobs": Annotated[
        Optional[int],
        typer.Option(
            help="Alternatives per token for p_a; 0 = off." + _default(_SAMPLE["top_logprobs"]), rich_help_panel=_S
        ),
    ],
}

_SAMPLING = ("temperature", "top_p", "max_tokens", "seed", "top_logprobs")
_COMPUTE_FLAGS = ("backend", "base_url", "api_key", "concurrency", "timeout", "max_retries", "device", "batch_size")
_RENAMED = {"base_url": "base_urls", "timeout": "timeout_s"}


def config_from_flags(values: dict[str, Any]) -> JudgeConfig:
    values = dict(values)
    file = values.pop("config")
    sampling = {k: values.pop(k) for k in _SAMPLING}
    compute = {_RENAMED.get(k, k): values.pop(k) for k in _COMPUTE_FLAGS}
    return build_config(file, sampling=sampling, compute=compute, **values)


def judge_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared judge flags to `command`, which receives them as one `config: JudgeConfig` argument."""
    sig = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # postponed annotations are strings until resolved
    own = [p.replace(annotation=hints[name]) for name, p in sig.parameters.items() if name != "config"]
    shared = [
        inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=a)
        for n, a in JUDGE_OPTIONS.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> Any:
        config = config_from_flags({n: kwargs.pop(n) for n in JUDGE_OPTIONS})
        return command(config=config, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=own + shared)  # type: ignore[attr-defined]
    return wrapper
