"""Wire schemas of the reward routes, requests and responses: /get_reward (OpenRLHF) and /v1/judge. /v1/rewards
has its schema in `deltarubric.rm.reward_protocol`, below this layer, because the trainer adapters share it.

Native routes forbid unknown fields, so a typo fails loudly with a 400 naming it. /get_reward follows OpenRLHF's
remote reward-model protocol exactly and ignores fields it does not know.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltarubric.rm.types import JudgeRequest, Verdict


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


class GetRewardLogs(BaseModel):
    """Per-sample values OpenRLHF logs next to the rewards."""

    judge_valid: list[float] = Field(..., description="1.0 where a verdict parsed, else 0.0 (the reward is neutral).")
    p_win: list[float] = Field(..., description="P(response beats reference), as the reward.")
    judge_latency_s: list[float]
    judge_timeout: list[float] = Field(..., description="1.0 when the request ran out of time (neutral rewards).")


class GetRewardResponse(BaseModel):
    rewards: list[float]
    scores: list[float] = Field(..., description="The rewards again: OpenRLHF reads either name.")
    extra_logs: GetRewardLogs


class JudgeAPIRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requests: list[JudgeRequest] = Field(..., min_length=1)


class JudgeAPIResponse(BaseModel):
    results: list[Verdict] = Field(..., description="One verdict per request, in order.")
    model: str = Field(..., description="The served model name.")
