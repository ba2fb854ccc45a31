"""Wire schemas of the reward routes: /get_reward (OpenRLHF), /v1/judge and /v1/rewards (native).

Native routes forbid unknown fields, so a typo fails loudly with a 400 naming it. /get_reward follows OpenRLHF's
remote reward-model protocol exactly and ignores fields it does not know.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltarubric.rm.types import JudgeRequest, TaskType


class GetRewardRequest(BaseModel):
    """OpenRLHF: three aligned lists. `labels[i]` carries what the trainer cannot send: a JSON string (or object)
    with `reference` (required: the answer the response is compared with), `images` (URLs, data URLs or allowed
    paths), and optionally `question` and `task_type`."""

    model_config = ConfigDict(extra="ignore")

    query: list[str] = Field(..., min_length=1)
    prompts: list[str] | None = None
    labels: list[str | dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _aligned(self) -> GetRewardRequest:
        for name in ("prompts", "labels"):
            value = getattr(self, name)
            if value is not None and len(value) != len(self.query):
                raise ValueError(f"{name} has {len(value)} entries but query has {len(self.query)}")
        return self


class JudgeAPIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[JudgeRequest] = Field(..., min_length=1)


class RewardItem(BaseModel):
    """One rollout: its prompt (and media), its response, and either a reference (mode 'reference') or a
    `group_id` shared with its siblings (mode 'group'). An empty response loses every comparison without a judge
    call. The answer, `{"rewards", "valid", "details"}`, is described in docs/server.md."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    group_id: str | None = None
    task_type: TaskType | None = Field(None, description="Default: image_understanding with images, else text.")
    question: str
    images: list[str] = Field(default_factory=list)
    response: str
    reference: str | None = None


class RewardsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["reference", "group"] = "reference"
    group_scoring: Literal["win_rate", "bradley_terry"] = "win_rate"
    items: list[RewardItem] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _mode_fields(self) -> RewardsRequest:
        for i, item in enumerate(self.items):
            if self.mode == "reference" and not (item.reference or "").strip():
                raise ValueError(f"items[{i}]: mode 'reference' needs a non-empty 'reference'")
            if self.mode == "group" and item.group_id is None:
                raise ValueError(f"items[{i}]: mode 'group' needs a 'group_id'")
        return self
