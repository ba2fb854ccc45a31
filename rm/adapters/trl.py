"""A reward function for TRL's `GRPOTrainer` that scores rollouts with the reward server.

    from deltarubric.rm.adapters.trl import make_judge_reward

    reward = make_judge_reward("http://judge-host:8000")  # mode "reference": the dataset needs a `reference` column
    trainer = GRPOTrainer(model=..., reward_funcs=[reward], processing_class=processor, train_dataset=ds, args=cfg)

TRL calls `reward(prompts=..., completions=..., completion_ids=..., **columns)`, where `columns` holds every other
dataset column as a list aligned with the completions, plus `trainer_state`, `log_metric` and friends. Prompts and
completions are strings (standard datasets) or lists of chat messages (conversational ones). The question sent to the
judge is the prompt string, or the text of the last user message. Images come from the `images` / `image` columns,
else from `{"type": "image", "image": <PIL>}` blocks in the prompt (TRL puts them there for VLM training), and are
sent as PNG data URLs. The result has one reward per completion, or None where the judge gave no valid verdict:
TRL turns None into NaN and leaves that sample out.

Mode "group" judges the rollouts of one prompt against each other; rollouts share a group id when their prompt text
and images are equal. TRL calls a reward function with the completions of its own process only, and with several
processes a GRPO group can be split between them (when a process's share of a generation batch,
`per_device_train_batch_size * steps_per_generation` completions, is not a multiple of `num_generations`): each
part is then judged as a smaller group, on fewer comparisons. Mode "reference" judges each rollout against its own
reference alone and is not affected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from deltarubric.rm.adapters.client import RewardClient, content_text, image_ref, last_user_text
from deltarubric.rm.reward_protocol import GroupScoring, Mode, RewardItem

__all__ = ["AsyncJudgeReward", "JudgeReward", "make_judge_reward"]

Message = Mapping[str, Any]
Prompt = str | Sequence[Message]


class _JudgeRewardBase:
    """Turns TRL's reward call into `/v1/rewards` items. Holds only plain data, so it pickles."""

    def __init__(
        self,
        client: RewardClient,
        mode: Mode,
        reference_column: str,
        group_scoring: GroupScoring,
        name: str = "deltarubric_judge",
    ) -> None:
        self.client = client
        self.mode: Mode = mode
        self.reference_column = reference_column
        self.group_scoring: GroupScoring = group_scoring
        self.__name__ = name  # TRL names the logged metrics (`rewards/<name>/mean`) after it

    def _items(
        self, prompts: Sequence[Prompt], completions: Sequence[Prompt], columns: Mapping[str, Any]
    ) -> list[RewardItem]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        references = columns.get(self.reference_column) if self.mode == "reference" else None
        if self.mode == "reference" and references is None:
            raise KeyError(
                f"mode 'reference' needs a dataset column {self.reference_column!r}; "
                f"TRL passed the columns {sorted(columns)}"
            )
        items = []
        for i, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            images = [image_ref(image) for image in _sample_images(columns, i, prompt)]
            items.append(
                RewardItem(
                    question=prompt if isinstance(prompt, str) else last_user_text(prompt),
                    images=images,
                    response=_completion_text(completion),
                    reference=None if references is None else str(references[i]),
                    group_id=_group_id(prompt, images) if references is None else None,
                )
            )
        return items

    def _log(self, rewards: list[float | None], columns: Mapping[str, Any]) -> None:
        log_metric: Callable[[str, float], None] | None = columns.get("log_metric")
        if log_metric is not None and rewards:
            log_metric(f"{self.__name__}/judge_valid_frac", sum(r is not None for r in rewards) / len(rewards))


class JudgeReward(_JudgeRewardBase):
    """Synchronous reward function: TRL calls it in its training loop."""

    def __call__(self, prompts: Sequence[Prompt], completions: Sequence[Prompt], **kwargs: Any) -> list[float | None]:
        rewards = self.client.rewards(self._items(prompts, completions, kwargs), self.mode, self.group_scoring)
        self._log(rewards, kwargs)
        return rewards


class AsyncJudgeReward(_JudgeRewardBase):
    """Asynchronous reward function: TRL awaits it on its event loop, concurrently with other async rewards."""

    async def __call__(
        self, prompts: Sequence[Prompt], completions: Sequence[Prompt], **kwargs: Any
    ) -> list[float | None]:
        rewards = await self.client.arewards(self._items(prompts, completions, kwargs), self.mode, self.group_scoring)
        self._log(rewards, kwargs)
        return rewards


def make_judge_reward(
    url: str,
    *,
    mode: Mode = "reference",
    reference_column: str = "reference",
    group_scoring: GroupScoring = "win_rate",
    asynchronous: bool = False,
    api_key: str | None = None,
    timeout_s: float = 600,
) -> JudgeReward | AsyncJudgeReward:
    """A TRL reward function posting to the reward server at `url` (its root, e.g. `http://127.0.0.1:8000`)."""
    cls = AsyncJudgeReward if asynchronous else JudgeReward
    return cls(RewardClient(url, timeout_s=timeout_s, api_key=api_key), mode, reference_column, group_scoring)


def _sample_images(columns: Mapping[str, Any], i: int, prompt: Prompt) -> list[Any]:
    if columns.get("images") is not None:
        return list(columns["images"][i] or [])
    if columns.get("image") is not None:
        return [] if columns["image"][i] is None else [columns["image"][i]]
    if isinstance(prompt, str):
        return []
    return [
        part["image"]
        for message in prompt
        if not isinstance(message.get("content"), str | None)
        for part in message["content"]
        if part.get("type") == "image" and part.get("image") is not None
    ]


def _completion_text(completion: Prompt) -> str:
    if isinstance(completion, str):
        return completion
    # With tool calls a completion holds several messages; the final assistant message is the answer.
    answers = [message for message in completion if message.get("role") == "assistant"]
    return content_text(answers[-1].get("content")) if answers else ""


def _group_id(prompt: Prompt, images: list[str]) -> str:
    text = prompt if isinstance(prompt, str) else [[m.get("role"), content_text(m.get("content"))] for m in prompt]
    return hashlib.sha256(json.dumps([text, images]).encode()).hexdigest()[:16]
