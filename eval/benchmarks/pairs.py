"""Your own data: any labelled-pair JSONL (`rm/pairs.py`: the fields of a JudgeRequest plus "label"), run, scored
and reported like the benchmarks.

Items: key = the pair's `id`, gold = its label, group = its `task_type`, so accuracy is broken down per task type.
Metrics (strict, as the benchmarks' strict variants): a pair is right only when every judged order picked the
labelled candidate; an unparsable verdict, a tie or a split between orders is wrong. `strict_macro` is the mean of
the per-task accuracies (the task types present), for files where one task type dominates. There is no official
preset: the labels are yours.

`eval run pairs --data FILE` binds the benchmark to one file with `for_file`, which reads and checks every line at
once (before any model is loaded) and records the file's path and sha256 as the run's data revision.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from deltarubric.eval.core import EvalItem, Prediction, decided, judge_stats, pct
from deltarubric.eval.spec import Benchmark, Scores, register
from deltarubric.rm.pairs import read_pairs

NAME = "pairs"


def score(preds: list[Prediction], task: str = "default") -> Scores:
    per_group = {}
    for g in sorted({p.group for p in preds}):
        members = [p for p in preds if p.group == g]
        per_group[g] = pct(sum(decided(p) == p.gold for p in members), len(members))
    out: Scores = {
        "strict_overall": pct(sum(decided(p) == p.gold for p in preds), len(preds)),
        "strict_macro": sum(per_group.values()) / len(per_group) if per_group else float("nan"),
    }
    out |= {f"strict_{g}": acc for g, acc in per_group.items()}
    return out | judge_stats(preds)


def load(path: Path, task: str = "default") -> list[EvalItem]:
    """Every pair of the JSONL file at `path`, in file order; the first bad line raises PairFileError naming it."""
    return [
        EvalItem(key=p.request.id, request=p.request, gold=p.label, group=p.request.task_type) for p in read_pairs(path)
    ]


def for_file(path: Path) -> Benchmark:
    """The benchmark bound to one pair file: its items read and validated now, its path and sha256 recorded."""
    path = Path(path)
    items = load(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return dataclasses.replace(
        BENCHMARK, load=lambda _path, _task: items, data_revision=f"{path.resolve()} (sha256 {digest})"
    )


BENCHMARK = register(
    Benchmark(
        name=NAME,
        description="Your own labelled pairs (eval run pairs --data FILE.jsonl): strict accuracy per task type.",
        tasks=("default",),
        load=load,
        score=score,
        official_judge="",  # none: --official is refused
        official_order="random",
        headline=("strict_overall", "strict_macro"),
        data_revision="a labelled-pair JSONL file (rm/pairs.py)",
    )
)
