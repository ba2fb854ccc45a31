"""Reward functions for training a judge, in TRL's reward-function shape, read by the same parsers as evaluation.

Each function takes the batch's completions plus dataset/rollout columns as keyword lists and returns one float per
row, or None where it does not apply (TRL then leaves that row out of its mean). Columns the rollout adds:

- `role`: "judge" (one-step judges), "planner" or "verifier" (DeltaRubric).
- `generated`: the text the model generated in this row's own turn (a verifier row's completion also holds the
  planner's checklist and the verifier prompt, which are not the model's to be rewarded for).
- `label_shown`: the better candidate in the labels the model saw ("A" = shown first).
- `group`, `chain`: which pair occurrence and which checklist chain a row belongs to, so a planner's reward can
  average the verifications that used its checklist.

Weights (TRL's `reward_weights`, default 1 each) scale each function before the per-role advantages.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from deltarubric.rubrics.parsing import PARSERS, parse_checklist, parse_msrl, parse_verdict

Reward = list[float | None]
MIN_CHECKLIST_ITEMS = 1


def _texts(completions: Sequence[Any], generated: Sequence[str | None] | None) -> list[str]:
    """The model's own text per row: the rollout's `generated` column, else the completion itself."""
    out = []
    for i, c in enumerate(completions):
        if generated is not None and generated[i] is not None:
            out.append(generated[i])
        elif isinstance(c, list):  # conversational: [{"role": "assistant", "content": ...}]
            out.append(
                c[-1]["content"]
                if isinstance(c[-1]["content"], str)
                else "".join(p.get("text", "") for p in c[-1]["content"])
            )
        else:
            out.append(c)
    return out


def _roles(n: int, role: Sequence[str] | None) -> list[str]:
    return list(role) if role is not None else ["judge"] * n


def _winner(text: str, parser: str) -> str | None:
    return PARSERS[parser](text).winner


def verdict_correct(
    completions: Sequence[Any],
    label_shown: Sequence[str],
    role: Sequence[str] | None = None,
    generated: Sequence[str | None] | None = None,
    parser: Sequence[str] | None = None,
    order: Sequence[str] | None = None,
    log_extra: Callable[[str, list[Any]], None] | None = None,
    **_: Any,
) -> Reward:
    """1.0 when the verdict names the better candidate, 0.0 when it names the other or cannot be read.
    Records each row's role and shown A/B order in TRL's completions table (`--log_completions true`)."""
    texts, roles = _texts(completions, generated), _roles(len(completions), role)
    if log_extra is not None and order is not None:
        log_extra("role", roles)
        log_extra("order", list(order))
    return [
        None if r == "planner" else float(_winner(t, parser[i] if parser else "verdict") == label_shown[i])
        for i, (t, r) in enumerate(zip(texts, roles))
    ]


def verdict_format(
    completions: Sequence[Any],
    role: Sequence[str] | None = None,
    generated: Sequence[str | None] | None = None,
    parser: Sequence[str] | None = None,
    **_: Any,
) -> Reward:
    """1.0 when the verdict parses (a Winner line; MSRL: both <think> and <answer>), else 0.0."""
    texts, roles = _texts(completions, generated), _roles(len(completions), role)
    out: Reward = []
    for i, (t, r) in enumerate(zip(texts, roles)):
        if r == "planner":
            out.append(None)
        elif parser and parser[i] == "msrl":
            p = parse_msrl(t)
            out.append(float(p.ok and bool(p.rationale)))
        else:
            out.append(float(parse_verdict(t).ok))
    return out


def checklist_usable(text: str) -> bool:
    """A checklist earns credit only with at least one item and no item that gives the verdict away."""
    parsed = parse_checklist(text)
    return len(parsed.checklist) >= MIN_CHECKLIST_ITEMS and parsed.leaked == 0


def _probe_accuracy(
    correct: Reward, role: Sequence[str], group: Sequence[int], chain: Sequence[int]
) -> dict[tuple[int, int], float]:
    """Mean verifier correctness per (group, chain): how well a checklist served the verifications that used it."""
    sums: dict[tuple[int, int], list[float]] = defaultdict(list)
    for c, r, g, k in zip(correct, role, group, chain):
        if r == "verifier" and c is not None:
            sums[(g, k)].append(c)
    return {key: sum(v) / len(v) for key, v in sums.items()}


def checklist_probe(
    completions: Sequence[Any],
    role: Sequence[str],
    group: Sequence[int],
    chain: Sequence[int],
    label_shown: Sequence[str],
    generated: Sequence[str | None],
    **_: Any,
) -> Reward:
    """Planner rows: the mean correctness of the verifications that used this checklist (the "probe accuracy").
    A checklist that is empty or leaks the verdict gets 0: its verifications cannot be credited to it."""
    correct = verdict_correct(completions, label_shown, role=role, generated=generated)
    probe = _probe_accuracy(correct, role, group, chain)
    texts = _texts(completions, generated)
    return [
        (probe.get((g, k), 0.0) if checklist_usable(t) else 0.0) if r == "planner" else None
        for t, r, g, k in zip(texts, role, group, chain)
    ]


def checklist_format(
    completions: Sequence[Any],
    role: Sequence[str],
    generated: Sequence[str | None],
    log_metric: Callable[[str, float], None] | None = None,
    **_: Any,
) -> Reward:
    """Planner rows: 1.0 for a usable checklist of 2-4 items under its header, 0.5 for one usable item, else 0.
    Also logs the mean checklist length and the share of checklists that leaked the verdict."""
    out: Reward = []
    lengths, leaks = [], []
    for t, r in zip(_texts(completions, generated), role):
        if r != "planner":
            out.append(None)
            continue
        parsed = parse_checklist(t)
        ok = checklist_usable(t)
        lengths.append(len(parsed.checklist))
        leaks.append(parsed.leaked > 0)
        out.append(0.0 if not ok else 1.0 if len(parsed.checklist) >= 2 and "checklist" in t.lower() else 0.5)
    if log_metric is not None and lengths:
        log_metric("planner/checklist_len", sum(lengths) / len(lengths))
        log_metric("planner/leak_rate", sum(leaks) / len(leaks))
    return out


def task_name(name: str | None) -> str:
    """A task type normalised as the authors' plugin does (case, '_'/'-'/spaces alike), written with '_'."""
    return "_".join((name or "").lower().replace("-", " ").replace("_", " ").split())


def task_type_correct(
    completions: Sequence[Any],
    task_type: Sequence[str],
    role: Sequence[str] | None = None,
    generated: Sequence[str | None] | None = None,
    **_: Any,
) -> Reward:
    """MSRL's task reward: 1.0 when <type> names the pair's task type (gold from the `task_type` column: for a
    caption view, the task of the pair it was made from), else 0.0. Weighted 0.2 in MSRL's recipes."""
    texts, roles = _texts(completions, generated), _roles(len(completions), role)
    named = [task_name(parse_msrl(t).task_type) for t in texts]
    return [
        None if r == "planner" else float(bool(n) and n == task_name(task_type[i]))
        for i, (n, r) in enumerate(zip(named, roles))
    ]


def task_type_authors(completions: Sequence[Any], task_type: Sequence[str], **kwargs: Any) -> Reward:
    """The authors' plugin (`msrl_task_reward`): 0.2 on a match, which their recipes weight 0.2 again (0.04)."""
    return [None if r is None else 0.2 * r for r in task_type_correct(completions, task_type, **kwargs)]


def rewards_for(judge: str) -> list[Any]:
    """The reward functions a judge trains with, in the order their weights are given."""
    if judge == "deltarubric":
        return [verdict_correct, verdict_format, checklist_probe, checklist_format]
    return [verdict_correct, verdict_format]
