"""nvidia/HelpSteer3, `preference` config: multi-turn text conversations with two candidate last replies.

Fields (dataset card, `dataset_info`): domain, language, context (a list of {role, content} turns ending with the
user's turn), response1, response2, overall_preference (-3..3: negative = response1 better, 0 = tie) and
individual_preference (per annotator: score, reasoning, feedback1, feedback2). Ties are dropped. The last user turn
is the question; earlier turns stay in the question text, labelled, because the judge sees one question string.
The annotators' reasoning that agrees with the overall preference becomes the pair's `rationale` (a warm-start
target), with its "@Response 1/2" mentions renamed to the A/B letters the pair ends up with.
"""

from __future__ import annotations

import re
from typing import Any

from deltarubric.pairdata.converters.base import FIRST, SECOND, Context, Converter, Draft, Skip, register, text
from deltarubric.pairdata.sources import Row, SchemaError

# "@Response 1", and "Response 1 and 2" (either order, and/or/&/vs): each number becomes its own mention.
_MENTION = re.compile(r"@?\bresponses?\s*([12])\b(?:(\s*(?:,|and|or|&|/|vs\.?)\s*)([12])\b)?", re.IGNORECASE)


def question_from_context(context: Any, row: Row) -> str:
    """The last user turn, preceded by the earlier turns (if any) as a labelled transcript."""
    if isinstance(context, str):
        return text(context, "context")
    if not isinstance(context, list) or not all(isinstance(t, dict) and "content" in t for t in context):
        raise SchemaError(f"helpsteer3: {row.path}:{row.number}: 'context' must be a list of {{role, content}} turns")
    if not context or context[-1].get("role") != "user":
        raise Skip("context does not end with a user turn")
    last = text(context[-1]["content"], "last user turn")
    if len(context) == 1:
        return last
    earlier = "\n\n".join(f"{str(t.get('role', '')).capitalize()}: {t['content']}" for t in context[:-1])
    return f"Earlier turns of the conversation:\n\n{earlier}\n\nThe user's last message:\n\n{last}"


def _rationale(individual: Any, overall: int) -> str | None:
    """The first annotator reasoning whose score has the overall preference's sign, mentions as placeholders."""
    for p in individual if isinstance(individual, list) else []:
        reasoning, score = (p.get("reasoning"), p.get("score")) if isinstance(p, dict) else (None, None)
        score = _integral(score)
        if isinstance(reasoning, str) and reasoning.strip() and score is not None and score * overall > 0:
            return _MENTION.sub(_placeholders, reasoning.strip())
    return None


def _placeholders(m: re.Match[str]) -> str:
    def one(n: str) -> str:
        return FIRST if n == "1" else SECOND

    return one(m.group(1)) + (m.group(2) + one(m.group(3)) if m.group(3) else "")


def _integral(value: Any) -> int | None:
    """An integer, or a float with an integral value (parquet and pandas give -2.0 when a column has nulls)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    pref = _integral(d["overall_preference"])
    if pref is None or not -3 <= pref <= 3:
        raise Skip("overall_preference is not an integer in -3..3")
    if pref == 0:
        raise Skip("tie (overall_preference 0)")
    return Draft(
        question=question_from_context(d["context"], row),
        first=text(d["response1"], "response1"),
        second=text(d["response2"], "response2"),
        better=0 if pref < 0 else 1,
        task_type="text",
        rationale=_rationale(d.get("individual_preference"), pref),
    )


CONVERTER = register(
    Converter(
        name="helpsteer3",
        dataset="nvidia/HelpSteer3 (preference)",
        description="Text preference pairs with multi-turn context (MSRL stage 1a); ties dropped.",
        fields=("context", "response1", "response2", "overall_preference"),
        schema="confirmed: dataset card's dataset_info (context [{role, content}], response1/2, overall_preference)",
        build=build,
    )
)
