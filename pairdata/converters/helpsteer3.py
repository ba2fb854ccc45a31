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

from pairdata.converters.base import FIRST, SECOND, Context, Converter, Draft, Skip, register, text
from pairdata.sources import Row, SchemaError

_MENTION = re.compile(r"@?\bresponse\s*([12])\b", re.IGNORECASE)


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
        if isinstance(reasoning, str) and reasoning.strip() and isinstance(score, int) and score * overall > 0:
            return _MENTION.sub(lambda m: FIRST if m.group(1) == "1" else SECOND, reasoning.strip())
    return None


def build(row: Row, ctx: Context) -> Draft:
    d = row.data
    pref = d["overall_preference"]
    if not isinstance(pref, int) or isinstance(pref, bool) or not -3 <= pref <= 3:
        raise Skip("overall_preference is not an integer in -3..3")
    if pref == 0:
        raise Skip("tie (overall_preference 0)")
    return Draft(question=question_from_context(d["context"], row), first=text(d["response1"], "response1"),
                 second=text(d["response2"], "response2"), better=0 if pref < 0 else 1, task_type="text",
                 rationale=_rationale(d.get("individual_preference"), pref))  # fmt: skip


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
