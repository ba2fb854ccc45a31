"""What a benchmark module declares: its `Benchmark` record, registered with `register`.

Each module in eval/benchmarks/ imports this and nothing above it; `eval/registry.py` finds the modules and imports
them, so imports run one way: registry -> benchmark modules -> spec.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from deltarubric.eval.core import EvalItem, Prediction

Scores = dict[str, float]


@dataclass(frozen=True)
class HubSource:
    """Where `eval run` gets the data when no --data-dir is given: a dataset repo at a pinned commit."""

    repo: str
    revision: str
    patterns: tuple[str, ...]  # the files the loader needs, so a download skips the rest


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    tasks: tuple[str, ...]  # sub-sets scored separately (GenAI-Bench's three); others have one
    load: Callable[[Path, str], list[EvalItem]]  # (local data folder, task) -> items, in file order
    score: Callable[[list[Prediction], str], Scores]  # official and strict metrics, in percent
    official_judge: str  # the preset in rubrics/prompts that reproduces the official prompt and parser; "" for none
    official_order: str  # 'given' (official keeps the released order) or 'random' (official shuffles per call)
    headline: tuple[str, ...] = field(default=())  # metric names shown first in tables
    data_revision: str = ""  # which release the loader and tests were checked against
    hub: HubSource | None = None  # None: the data is not on the hub in a usable form; a local folder is needed
    read_official: Callable[[Path], list[Prediction]] | None = None  # the benchmark's published prediction format
    write_official: Callable[[list[Prediction], Path], None] | None = None  # predictions in the official schema
    # `eval prepare`: (downloaded release, output folder, split) -> rows written per task, turning the benchmark's own
    # release into the layout `load` reads; None where the release needs no conversion.
    prepare: Callable[[Path, Path, str], dict[str, int]] | None = None
    default_split: str = ""  # the split `prepare` exports unless told otherwise
    # Sampling the official inference used (temperature, top_p, max_tokens): `--official` runs with it unless the user
    # sets those values (a flag or --config); empty: our defaults (greedy, 1024 tokens).
    official_sampling: dict[str, float | int] = field(default_factory=dict)
    # The official metric votes over k sampled judgments per item (`eval run --samples k`, VL-RewardBench's cal.py).
    votes_over_samples: bool = False
    # The official parser reads each sample with the order it was shown in (VL-RewardBench: cal.py draws the order per
    # sample), so the preset's text stays in the official format under --swap, any order and k samples. Otherwise only
    # the preset run in the official order, one order per item, is read with the official rule.
    official_any_order: bool = False


# Filled by register() as the benchmark modules are imported; looked up through eval/registry.py.
REGISTERED: dict[str, Benchmark] = {}


def register(benchmark: Benchmark) -> Benchmark:
    """Add a benchmark under its name (a module calls this once, at import); a second one of that name is an error."""
    if benchmark.name in REGISTERED:
        raise ValueError(f"benchmark {benchmark.name!r} is registered twice")
    REGISTERED[benchmark.name] = benchmark
    return benchmark
