"""From pairwise verdicts to scalar rewards: win probabilities, group win rates, Bradley-Terry strengths.

Pure functions over verdicts, so each is testable on hand-made numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from deltarubric.rm.types import Verdict

NEUTRAL = 0.5  # the reward for "could not judge": no push either way

_SPECIAL_TAIL = re.compile(r"(?:<\|im_end\|>|<\|endoftext\|>|</s>|<eos>|\s)+$")
_VISION = re.compile(r"<\|vision_start\|>.*?<\|vision_end\|>|<\|image_pad\|>+|<\|video_pad\|>+", re.DOTALL)


def p_a_wins(v: Verdict) -> float | None:
    """P(candidate A is better): the verdict token's probability when there is one, else the vote (tie = 0.5)."""
    if v.winner is None:
        return None
    if v.p_a is not None:
        return v.p_a
    return {"A": 1.0, "B": 0.0, "tie": 0.5}[v.winner]


def response_from_query(query: str, prompt: str | None) -> str:
    """The policy's response inside OpenRLHF's `query` (prompt + response, special tokens kept)."""
    if prompt and query.startswith(prompt):
        response = query[len(prompt) :]
    else:
        response = query.rsplit("<|im_start|>assistant\n", 1)[-1]
    return _SPECIAL_TAIL.sub("", response).strip()


IMAGE_ONLY_QUESTION = "Respond to the image."


def question_from_prompt(prompt: str) -> str:
    """The last user turn of a chat-templated prompt, with vision placeholders removed. A turn with only an image
    (captioning: the instruction sits in the system turn) falls back to the system turn, then to a neutral ask."""
    turn = prompt.rsplit("<|im_start|>user\n", 1)[-1].split("<|im_end|>", 1)[0]
    question = _VISION.sub("", turn).strip()
    if not question and "<|im_start|>system\n" in prompt:
        question = prompt.split("<|im_start|>system\n", 1)[1].split("<|im_end|>", 1)[0].strip()
    return question or IMAGE_ONLY_QUESTION


def win_rates(n: int, outcomes: Sequence[tuple[int, int, float | None]]) -> list[float | None]:
    """Mean P(i beats j) over the parsed comparisons involving i; None when i has none."""
    total, count = [0.0] * n, [0] * n
    for i, j, p in outcomes:
        if p is None:
            continue
        total[i] += p
        total[j] += 1 - p
        count[i] += 1
        count[j] += 1
    return [t / c if c else None for t, c in zip(total, count)]


def bradley_terry(n: int, outcomes: Sequence[tuple[int, int, float | None]], iters: int = 200) -> list[float | None]:
    """Centred log-strengths fitted to soft wins with the MM algorithm (Hunter, 2004).

    Each parsed comparison contributes p wins to i and 1-p to j. A prior of half a win and half a loss against a
    virtual average player keeps strengths finite when a candidate wins or loses everything.
    """
    wins = [0.5] * n
    games: list[dict[int, float]] = [{} for _ in range(n)]
    seen = [False] * n
    for i, j, p in outcomes:
        if p is None:
            continue
        wins[i] += p
        wins[j] += 1 - p
        games[i][j] = games[i].get(j, 0.0) + 1
        games[j][i] = games[j].get(i, 0.0) + 1
        seen[i] = seen[j] = True
    strength = [1.0] * n
    for _ in range(iters):  # the prior's opponent stays at strength 1, which anchors the scale: no rescaling here
        strength = [
            wins[i] / (1.0 / (strength[i] + 1.0) + sum(k / (strength[i] + strength[j]) for j, k in games[i].items()))
            for i in range(n)
        ]
    logs = [math.log(s) for s, ok in zip(strength, seen) if ok]
    centre = sum(logs) / len(logs) if logs else 0.0
    return [math.log(s) - centre if ok else None for s, ok in zip(strength, seen)]
