"""verl custom reward function that scores each response against its ground truth with the reward server.

    reward.custom_reward_function.path=<site-packages>/deltarubric/rm/adapters/verl.py
    reward.custom_reward_function.name=compute_score_async          # or compute_score (sync)
    +reward.custom_reward_function.reward_kwargs.reward_url=http://judge-host:8000   # or env DELTARUBRIC_REWARD_URL

verl passes only the decoded response, the ground truth and the `extra_info` column, never the prompt's images, so
preprocessing must store `extra_info["question"]` (the question text) and `extra_info["images"]` (URLs, paths the
server may read, data URLs, PIL images or `{"bytes": ...}` dicts). verl's reward loop runs one call per sample and
many concurrently, so prefer the async function (with the `naive` or `rate_limited` reward manager).

The result is `{"score": float, "judge_valid": bool}`: the score is P(response beats ground truth), and
`NEUTRAL_REWARD` (0.5) when the judge gave no valid verdict; `judge_valid` ends up in verl's logged reward extras.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from deltarubric.rm.adapters.client import RewardClient, image_ref
from deltarubric.rm.reward_protocol import NEUTRAL_REWARD, RewardItem

__all__ = ["compute_score", "compute_score_async"]


def compute_score(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    rewards = _client(kwargs).rewards([_item(solution_str, ground_truth, extra_info)])
    return _result(rewards[0])


async def compute_score_async(
    data_source: str, solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None = None, **kwargs: Any
) -> dict[str, Any]:
    rewards = await _client(kwargs).arewards([_item(solution_str, ground_truth, extra_info)])
    return _result(rewards[0])


def _client(kwargs: Mapping[str, Any]) -> RewardClient:
    url = kwargs.get("reward_url") or os.environ.get("DELTARUBRIC_REWARD_URL")
    if not url:
        raise ValueError("no reward server: set reward_kwargs.reward_url or the env var DELTARUBRIC_REWARD_URL")
    return RewardClient(url, api_key=kwargs.get("reward_api_key") or os.environ.get("DELTARUBRIC_API_KEY"))


def _item(solution_str: str, ground_truth: Any, extra_info: Mapping[str, Any] | None) -> RewardItem:
    if not extra_info or "question" not in extra_info:
        raise ValueError(
            "extra_info['question'] is missing: store the question (and extra_info['images']) in the "
            "dataset's extra_info column during preprocessing"
        )
    images = extra_info.get("images")
    return RewardItem(
        question=str(extra_info["question"]),
        # list(): parquet hands over numpy arrays, whose truth value is ambiguous
        images=[] if images is None else [image_ref(image) for image in list(images)],
        response=solution_str,
        reference=str(ground_truth),
    )


def _result(reward: float | None) -> dict[str, Any]:
    return {"score": NEUTRAL_REWARD if reward is None else reward, "judge_valid": reward is not None}
