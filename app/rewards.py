"""The reward routes' logic as pure functions: requests into pairs to judge, pairwise verdicts into scalar rewards
(win probabilities, group win rates, Bradley-Terry strengths). Each is testable on hand-made bodies and numbers; the
reward service (app/service.py) runs them and the judge.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deltarubric.app.errors import InputError
from deltarubric.app.reward_protocol import GetRewardLogs, GetRewardRequest, GetRewardResponse
from deltarubric.rm.reward_protocol import NEUTRAL_REWARD, RewardDetail, RewardsRequest, RewardsResponse
from deltarubric.rm.tasks import infer_task_type
from deltarubric.rm.types import JudgeRequest, Verdict

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


# ---------------------------------------------------------------------------------------------------- /get_reward


def _label(raw: str | dict | None, i: int) -> dict[str, Any]:
    """OpenRLHF's `labels[i]`: a JSON object (or its string) with at least `reference`."""
    if raw is None:
        raise InputError("labels are required: each a JSON object with 'reference' (and 'images')", "labels")
    try:
        label = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise InputError(f"labels[{i}] is not JSON: {e.msg}", f"labels[{i}]") from e
    except RecursionError as e:  # nested deeper than the parser goes
        raise InputError(f"labels[{i}] is nested too deeply", f"labels[{i}]") from e
    if not isinstance(label, dict) or not str(label.get("reference") or "").strip():
        raise InputError(f"labels[{i}] must be a JSON object with a non-empty 'reference'", f"labels[{i}]")
    if not isinstance(label.get("images", []), list) or not all(isinstance(x, str) for x in label.get("images", [])):
        raise InputError(f"labels[{i}].images must be a list of strings", f"labels[{i}].images")
    for key in ("question", "task_type"):
        if label.get(key) is not None and not isinstance(label[key], str):
            raise InputError(f"labels[{i}].{key} must be a string", f"labels[{i}].{key}")
    return label


def reward_requests(body: GetRewardRequest) -> list[JudgeRequest | None]:
    """/get_reward's samples as pairs (response vs reference); None for an empty response, which loses unjudged."""
    requests: list[JudgeRequest | None] = []
    for i, query in enumerate(body.query):
        label = _label(body.labels[i] if body.labels else None, i)
        prompt = body.prompts[i] if body.prompts else None
        images = label.get("images") or []
        response = response_from_query(query, prompt)
        try:
            req = JudgeRequest(
                id=str(i),
                task_type=label.get("task_type") or infer_task_type("text", images),
                question=label.get("question") or question_from_prompt(prompt or query),
                images=images,
                a=response or "-",
                b=label["reference"],
            )
        except ValueError as e:
            raise InputError(f"labels[{i}]: {e}", f"labels[{i}]") from e
        requests.append(req if response else None)
    return requests


def get_reward_answer(
    n: int, requests: list[JudgeRequest | None] | None, verdicts: Sequence[Verdict], timed_out: bool
) -> GetRewardResponse:
    """/get_reward's answer for `n` samples from the verdicts of the judged ones (in order). `requests` None: the time
    ran out while the samples were checked, so all are neutral; an empty response (request None) gets 0."""
    found = iter(verdicts)
    if requests is None:
        judged: list[Verdict | None] = [None] * n
        probs: list[float | None] = [None] * n
    else:
        judged = [next(found, None) if r is not None else None for r in requests]
        probs = [0.0 if r is None else (p_a_wins(v) if v else None) for r, v in zip(requests, judged)]
    rewards = [NEUTRAL_REWARD if p is None else p for p in probs]
    return GetRewardResponse(
        rewards=rewards,
        scores=rewards,
        extra_logs=GetRewardLogs(
            judge_valid=[0.0 if p is None else 1.0 for p in probs],
            p_win=rewards,
            judge_latency_s=[v.latency_s if v else 0.0 for v in judged],
            judge_timeout=[float(timed_out)] * n,
        ),
    )


# ---------------------------------------------------------------------------------------------------- /v1/rewards


@dataclass
class RewardsPlan:
    """A /v1/rewards request turned into pairs: (i, j) rollouts (j None: the reference), their judge requests (None:
    decided without the judge) and fixed outcomes, and each group's pair indices."""

    pairs: list[tuple[int, int | None]]
    requests: list[JudgeRequest | None]
    fixed: list[float | None]
    groups: list[tuple[list[int], list[int]]] = field(default_factory=list)  # (members, indices into pairs)

    def judged(self) -> list[tuple[JudgeRequest, str]]:
        """The pairs the judge must see, each with the field that names it in errors."""
        return [(r, f"items[{i}]") for r, (i, _) in zip(self.requests, self.pairs) if r is not None]

    def outcomes(self, verdicts: Sequence[Verdict]) -> list[float | None]:
        """P(first wins) for every pair: the fixed ones, and the verdicts of the judged ones (in order)."""
        found = iter(verdicts)
        return [f if r is None else p_a_wins(next(found)) for r, f in zip(self.requests, self.fixed)]


def rewards_plan(body: RewardsRequest, max_pairs: int) -> RewardsPlan:
    """/v1/rewards' rollouts as pairs, at most `max_pairs` of them, decided ones included; the work is linear in the
    pairs."""
    items = body.items
    groups: list[tuple[list[int], list[int]]] = []
    if body.mode == "reference":
        pairs: list[tuple[int, int | None]] = [(i, None) for i in range(len(items))]
    else:
        members: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            members.setdefault(item.group_id or "", []).append(i)
        # G(G-1)/2 pairs per group: checked before any is built, so a huge group is refused at once
        total = sum(len(m) * (len(m) - 1) // 2 for m in members.values())
        if total > max_pairs:
            raise InputError(f"{total} pairs in one request; the limit is {max_pairs}", "items", 413)
        pairs = []
        for group in members.values():
            start = len(pairs)
            pairs += [(a, b) for x, a in enumerate(group) for b in group[x + 1 :]]
            groups.append((group, list(range(start, len(pairs)))))
    if len(pairs) > max_pairs:
        raise InputError(f"{len(pairs)} pairs in one request; the limit is {max_pairs}", "items", 413)
    requests: list[JudgeRequest | None] = []  # None: an empty side, decided without the judge
    fixed: list[float | None] = []
    for k, (i, j) in enumerate(pairs):
        item = items[i]
        other = item.reference if j is None else items[j].response
        first_empty, second_empty = not item.response.strip(), not (other or "").strip()
        fixed.append(0.5 if first_empty and second_empty else 0.0 if first_empty else 1.0 if second_empty else None)
        # A prompt that is only an image (captioning) has no question text; ask neutrally, as /get_reward does.
        question = item.question if item.question.strip() or not item.images else IMAGE_ONLY_QUESTION
        try:
            req = JudgeRequest(
                id=str(k),
                task_type=item.task_type or infer_task_type("text", item.images),
                question=question,
                images=item.images,
                a=item.response or "-",
                b=other or "-",
            )
        except ValueError as e:
            raise InputError(f"items[{i}]: {e}", f"items[{i}]") from e
        requests.append(None if fixed[-1] is not None else req)
    return RewardsPlan(pairs, requests, fixed, groups)


def rewards_answer(plan: RewardsPlan, body: RewardsRequest, probs: list[float | None]) -> RewardsResponse:
    """Rewards, validity and per-rollout counts from the pairs' outcomes, in one pass over the pairs."""
    n = len(body.items)
    comparisons, parsed = [0] * n, [0] * n
    for (i, j), p in zip(plan.pairs, probs):
        for k in (i, j):
            if k is not None:
                comparisons[k] += 1
                parsed[k] += p is not None
    if body.mode == "reference":
        values: list[float | None] = list(probs)
        neutral = NEUTRAL_REWARD
    else:
        # Each group is scored on its own comparisons only, so a group's rewards never depend on its neighbours.
        scorer = bradley_terry if body.group_scoring == "bradley_terry" else win_rates
        values = [None] * n
        for members, indices in plan.groups:
            local = {g: k for k, g in enumerate(members)}
            outcomes = [(local[plan.pairs[x][0]], local[plan.pairs[x][1]], probs[x]) for x in indices]  # type: ignore[index]
            for g, v in zip(members, scorer(len(members), outcomes)):
                values[g] = v
        neutral = 0.0 if body.group_scoring == "bradley_terry" else NEUTRAL_REWARD
    return RewardsResponse(
        rewards=[neutral if v is None else v for v in values],
        valid=[v is not None for v in values],
        details=[RewardDetail(comparisons=c, parsed=p) for c, p in zip(comparisons, parsed)],
    )
