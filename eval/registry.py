"""The benchmark registry: every module in eval/benchmarks/ declares one `Benchmark` (eval/spec.py); looking a name up
imports them all, found by listing the package, so a new benchmark is a new module and nothing else."""

from __future__ import annotations

import functools
import importlib
import pkgutil

import deltarubric.eval.benchmarks as benchmark_modules
from deltarubric.eval.spec import REGISTERED, Benchmark, HubSource, Scores

__all__ = ["Benchmark", "HubSource", "Scores", "benchmark_names", "get_benchmark"]


@functools.cache
def _import_benchmark_modules() -> None:
    for module in pkgutil.iter_modules(benchmark_modules.__path__):
        importlib.import_module(f"{benchmark_modules.__name__}.{module.name}")


def get_benchmark(name: str) -> Benchmark:
    _import_benchmark_modules()
    if name not in REGISTERED:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(sorted(REGISTERED))}")
    return REGISTERED[name]


def benchmark_names() -> list[str]:
    _import_benchmark_modules()
    return sorted(REGISTERED)
