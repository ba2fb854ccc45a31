"""wangclnlp/GRAM-RR-TrainingData: text pairs inside a whole judging prompt (MSRL stage 1b; files of 7 and 21 GB,
streamed row by row by `deltarubric.pairdata.sources`).

Fields (dataset card): `instruction` holds the full GRAM-RR prompt: rules, then `[User Question]`, then the two
responses between `[The Start of Assistant A's Response]` ... `[The End of Assistant A's Response]` (and B's); the
sibling GRAM datasets write "Answer" for "Response", which is accepted too. `input` is empty. `output` holds the
label: the card's template ends with `<answer>A or B</answer>`; a bare "A"/"B" (GRAM fine-tuning data) is read too.
The instruction template is confirmed from the card and the GRAM-RR README; the exact `output` text is assumed from
the template (the card's output section was not readable here), so an output with neither form is skipped and
counted, never guessed.
"""

from __future__ import annotations

import re
from typing import Literal

from deltarubric.pairdata.converters.base import Context, Converter, Draft, Skip, register, text
from deltarubric.pairdata.sources import Row

_SIDE = (
    r"\[The Start of Assistant {s}'s (?:Response|Answer)\]\s*\n(.*?)\n?\s*"
    r"\[The End of Assistant {s}'s (?:Response|Answer)\]"
)
_PROMPT = re.compile(r"\[User Question\]\s*\n(.*?)\s*" + _SIDE.format(s="A") + r"\s*" + _SIDE.format(s="B"), re.DOTALL)
_ANSWER = re.compile(r"<answer>\s*([AB])\s*</answer>", re.IGNORECASE)


def parse_instruction(instruction: str) -> tuple[str, str, str]:
    """(question, response A, response B) from a GRAM-style judging prompt; Skip if the markers are not there."""
    m = _PROMPT.search(instruction)
    if not m:
        raise Skip("instruction has no [User Question] / Assistant A / Assistant B sections")
    return m.group(1).strip(), m.group(2).strip(), m.group(3).strip()


def parse_label(output: str) -> Literal[0, 1]:
    """0 when A is better, 1 when B is; from `<answer>X</answer>` (the last one) or a bare 'A'/'B'."""
    answers = _ANSWER.findall(output)
    label = answers[-1].upper() if answers else output.strip().strip('"').upper()
    if label not in ("A", "B"):
        raise Skip("output holds no <answer>A|B</answer> or bare A/B")
    return 0 if label == "A" else 1


def build(row: Row, ctx: Context) -> Draft:
    question, first, second = parse_instruction(text(row.data["instruction"], "instruction"))
    better = parse_label(text(row.data["output"], "output"))
    return Draft(question=question, first=first, second=second, better=better, task_type="text")


CONVERTER = register(
    Converter(
        name="gram_rr",
        dataset="wangclnlp/GRAM-RR-TrainingData",
        description="Text pairs parsed out of GRAM-RR judging prompts (MSRL stage 1b); streamed.",
        fields=("instruction", "output"),
        schema="confirmed: the instruction template (card, GRAM-RR README); "
        "assumed: the output as <answer>X</answer> or a bare X",
        build=build,
    )
)
