"""What flows through an evaluation: items (a request plus its gold label) and predictions (what a judge said).

A runner turns items into predictions; a scorer turns predictions into metrics; neither does the other's job.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from deltarubric.rm.types import JudgeRequest, Verdict
from deltarubric.rubrics.parsing import PARSERS
from deltarubric.rubrics.prompts import load_method


class EvalItem(BaseModel):
    """One benchmark item. `request.a` is the benchmark's first-listed candidate; the judge decides what to show."""

    model_config = {"arbitrary_types_allowed": True}

    key: str = Field(..., description="Unique within the benchmark task; results are keyed by it.")
    request: JudgeRequest
    gold: str = Field(..., description="'A'/'B' for pairwise labels; GenAI-Bench keeps its vote_type.")
    group: str = Field("", description="The category the official metric breaks results down by.")
    meta: dict[str, Any] = Field(default_factory=dict)


class Prediction(BaseModel):
    """A judged item as scorers see it, whether it came from our run or from a published prediction file."""

    key: str
    gold: str
    group: str = ""
    winner: str | None = None  # A | B | tie | None, in the item's labels
    samples: list[tuple[str, str | None]] = Field(default_factory=list)  # (order shown, winner) per judged order
    # The vote of each sample exactly as its parser read it (`OrderResult.label`), as in `samples`: what official
    # metrics score ('[[A=B=Bad]]', 'Answer 3'), which a winner cannot say.
    labels: list[str | None] = Field(default_factory=list)
    raw: str | None = None  # the final raw text when one order was judged (exports and diagnostics)
    official_format: bool = False  # the votes follow the benchmark's official output format (official preset or file)
    parse_ok: bool = False
    error: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def from_verdict(cls, item: EvalItem, verdict: Verdict, *, official_format: bool = False) -> Prediction:
        # With one order judged, the last raw entry is the final stage's text (entries are written stage by stage).
        single_order = len(verdict.orders) == 1 and verdict.raw
        # Each order's final stage is its last '<order>/<stage>' entry.
        final = {key.split("/", 1)[0]: text for key, text in verdict.raw.items()}
        return cls(
            key=item.key,
            gold=item.gold,
            group=item.group,
            winner=verdict.winner,
            samples=[(o.shown_order, o.winner) for o in verdict.orders],
            # A verdict recorded before orders kept their label (an older results.jsonl) is read from its raw text.
            labels=[
                o.label if "label" in o.model_fields_set else vote_label(verdict.judge, final.get(o.shown_order))
                for o in verdict.orders
            ],
            raw=list(verdict.raw.values())[-1] if single_order else None,
            official_format=official_format,
            parse_ok=verdict.parse_ok,
            error=verdict.error,
            meta=item.meta,
        )

    @classmethod
    def from_samples(cls, item: EvalItem, verdicts: list[Verdict], *, official_format: bool = False) -> Prediction:
        """An item judged k times (`eval run --samples k`): every judged order of every sample is one vote, in sample
        order, each with its own final raw text. The winner is the one more than half of the votes gave (else None);
        the item parsed when every sample did, and carries the first sample error, so a resume judges it again."""
        parts = [cls.from_verdict(item, v, official_format=official_format) for v in verdicts]
        samples = [s for p in parts for s in p.samples]
        winners = [w for _, w in samples]
        error = next((p.error for p in parts if p.error), None)
        return cls(
            key=item.key,
            gold=item.gold,
            group=item.group,
            winner=next((w for w in ("A", "B", "tie") if winners.count(w) > len(winners) / 2), None),
            samples=samples,
            labels=[label for p in parts for label in p.labels],
            raw=parts[0].raw if len(parts) == 1 else None,
            official_format=official_format,
            parse_ok=bool(parts) and all(p.parse_ok for p in parts) and error is None,
            error=error,
            meta=item.meta,
        )


def vote_label(judge: str, text: str | None) -> str | None:
    """The vote label that `judge`'s verdict stage reads from `text` (None for no text, or a judge that is gone)."""
    try:
        method = load_method(judge)
    except ValueError:
        return None
    return PARSERS[method.stages[-1].parser](text).label if text is not None else None


def decided(p: Prediction) -> str | None:
    """The winner when every judged order (of every sample, with `--samples k`) gave it, else None: a split counts as
    no decision (strict), even when the aggregate broke the tie by probability."""
    winners = {w for _, w in p.samples} if p.samples else {p.winner}
    return winners.pop() if len(winners) == 1 else None


def short_hash(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]


def pct(numerator: float, denominator: float) -> float:
    """A percentage, or NaN for an empty denominator (printed as 'n/a', never a silent 0)."""
    return 100.0 * numerator / denominator if denominator else float("nan")


def json_scores(scores: dict[str, float]) -> dict[str, float | None]:
    """Scores for JSON output: an undefined metric (NaN: empty denominator) is null, as JSON has no NaN."""
    return {k: None if math.isnan(v) else round(v, 4) for k, v in scores.items()}


def judge_stats(preds: list[Prediction]) -> dict[str, float]:
    """Judge-behaviour figures every benchmark reports beside its accuracy.

    - parse_failure_rate: items the judge answered but whose verdict could not be read, % of all items.
    - error_rate: items that got no answer at all (media that could not be loaded, a backend error: the verdict's
      `error`), % of all items. Strict metrics count both kinds as wrong; these two say which it was.
    - swap_consistency: items judged once in each order whose two parsed winners agree, % of such items (items with
      more samples, `--samples k`, are not counted).
    - first_position_rate: decisive verdicts that picked the candidate shown first, % (50 = no position bias).
    """
    errors = sum(bool(p.error) for p in preds)
    failures = sum(not p.parse_ok and not p.error for p in preds)
    both = [
        p
        for p in preds
        if len(p.samples) == 2
        and {o for o, _ in p.samples} == {"AB", "BA"}
        and all(w in ("A", "B") for _, w in p.samples)
    ]
    decisive = [(o, w) for p in preds for o, w in p.samples if w in ("A", "B")]
    first = sum((w == "A") == (o == "AB") for o, w in decisive)
    return {
        "parse_failure_rate": pct(failures, len(preds)),
        "error_rate": pct(errors, len(preds)),
        "swap_consistency": pct(sum(p.samples[0][1] == p.samples[1][1] for p in both), len(both)),
        "first_position_rate": pct(first, len(decisive)),
        "n": float(len(preds)),
    }


# Media problems rm/media.py names after the source ("<path>: file not found"): one kind each, whichever the item.
_MEDIA_PROBLEMS = (
    "file not found",
    "cannot read file",
    "not a readable image",
    "corrupt or truncated",
    "exceeds the limit",
    "aspect ratio",
    "download failed",
    "redirects are not followed",
    "larger than",
    "invalid base64",
    "only base64 data URLs",
)
_PATHS = re.compile(r"[^\s'\"]*[/\\][^\s'\"]*?(?=:?(?:\s|$))")  # a path or URL, not the colon after it


def error_kind(message: str) -> str:
    """What went wrong, without saying which item: items that failed for one reason share a kind (paths, URLs and
    numbers left out), so a run can tell 'every item failed the same way' from scattered failures."""
    if not message.startswith("backend error"):
        problem = next((p for p in _MEDIA_PROBLEMS if p in message), None)
        if problem:
            return f"media: {problem}"
    return re.sub(r"\d+", "N", _PATHS.sub("<path>", message))[:200]


def error_counts(errors: Iterable[str | None]) -> list[tuple[str, int, str]]:
    """(kind, count, one full message of that kind) for the errors given (None: no error), the most common first."""
    kinds: Counter[str] = Counter()
    example: dict[str, str] = {}
    for error in errors:
        if error:
            kinds[error_kind(error)] += 1
            example.setdefault(error_kind(error), error)
    return [(kind, n, example[kind]) for kind, n in kinds.most_common()]
