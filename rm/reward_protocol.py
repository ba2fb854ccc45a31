"""The wire schema of the reward server's `POST /v1/rewards`, one for both sides: the server validates bodies with it,
and the trainer adapters (`deltarubric.rm.adapters`) build their payloads and read the answers with it.

Pydantic only, so the adapters import it without the server's dependencies. Requests forbid unknown fields, so a typo
fails loudly with a 400 naming it; answers ignore fields they do not know, so a newer server still talks to an older
client.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltarubric.rm.types import TaskType

NEUTRAL_REWARD = 0.5  # the reward for a rollout the judge could not score: no push either way
Mode = Literal["reference", "group"]
GroupScoring = Literal["win_rate", "bradley_terry"]


class RewardItem(BaseModel):
    """One rollout: its prompt (and media), its response, and either a reference (mode 'reference') or a
    `group_id` shared with its siblings (mode 'group'). An empty response loses every comparison without a judge
    call."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = None
    group_id: str | None = None
    task_type: TaskType | None = Field(None, description="Default: image_understanding with images, else text.")
    question: str
    images: list[str] = Field(default_factory=list, description="Data URLs, http(s) URLs or paths the server reads.")
    response: str
    reference: str | None = None


class RewardsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Mode = Field("reference", description="Each rollout against its reference, or within its group.")
    group_scoring: GroupScoring = Field("win_rate", description="Mode 'group': mean P(win), or Bradley-Terry.")
    items: list[RewardItem] = Field(..., min_length=1)

    @model_validator(mode="after")
    def _mode_fields(self) -> RewardsRequest:
        for i, item in enumerate(self.items):
            if self.mode == "reference" and not (item.reference or "").strip():
                raise ValueError(f"items[{i}]: mode 'reference' needs a non-empty 'reference'")
            if self.mode == "group" and item.group_id is None:
                raise ValueError(f"items[{i}]: mode 'group' needs a 'group_id'")
        return self


class RewardDetail(BaseModel):
    comparisons: int = Field(..., description="Comparisons involving the rollout.")
    parsed: int = Field(..., description="Of those, how many gave a parsable verdict.")


class RewardsResponse(BaseModel):
    rewards: list[float] = Field(..., description="One reward per item; neutral where `valid` is false.")
    valid: list[bool] = Field(..., description="Whether any verdict involving the item parsed.")
    details: list[RewardDetail]

    def valid_rewards(self) -> list[float | None]:
        """The rewards with None where no verdict parsed (TRL and ms-swift turn None into NaN and skip the sample)."""
        return [r if ok else None for r, ok in zip(self.rewards, self.valid, strict=True)]
