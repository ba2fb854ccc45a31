"""Wire schemas of the OpenAI-compatible routes, requests and responses. Like vLLM, extra request fields are
accepted (clients send many) and logged; responses carry every field the official openai client's types require."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from deltarubric.rm.backends import Generation
from deltarubric.rm.config import SamplingConfig

log = logging.getLogger(__name__)

GREEDY_BELOW = 1e-5  # vLLM's _SAMPLING_EPS
DEFAULT_MAX_TOKENS = 1024  # a chat request that names no max_tokens gets this, or the server's cap if lower


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _log_ignored(self) -> _Lenient:
        if self.model_extra:
            log.debug("%s: ignoring fields %s", type(self).__name__, sorted(self.model_extra))
        return self


class MediaURL(_Lenient):
    url: str


class ContentPart(_Lenient):
    type: Literal["text", "image_url", "video_url"]
    text: str | None = None
    image_url: MediaURL | None = None
    video_url: MediaURL | None = None

    @model_validator(mode="after")
    def _payload_present(self) -> ContentPart:
        if getattr(self, self.type) is None:
            raise ValueError(f"a content part of type {self.type!r} needs a {self.type!r} field")
        return self


class ChatMessage(_Lenient):
    role: Literal["system", "user", "assistant"]
    content: str | list[ContentPart] | None = None

    @model_validator(mode="after")
    def _valid_unicode(self) -> ChatMessage:
        parts = self.content if isinstance(self.content, list) else []
        texts = [self.content if isinstance(self.content, str) else ""] + [p.text or "" for p in parts]
        texts += [m.url for p in parts for m in (p.image_url, p.video_url) if m is not None]
        try:
            for text in texts:
                text.encode("utf-8")
        except UnicodeEncodeError as e:  # lone surrogates: no tokenizer takes them
            raise ValueError("text must be valid Unicode (no lone surrogates)") from e
        return self


class ChatCompletionRequest(_Lenient):
    model: str
    messages: list[ChatMessage] = Field(..., min_length=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1, le=32768)
    max_completion_tokens: int | None = Field(None, ge=1, le=32768)
    seed: int | None = Field(None, ge=-(2**63), lt=2**63, description="A 64-bit integer, as engines take it.")
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    stream: Literal[False] = Field(False, description="Streaming is not supported.")

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs requires logprobs=true")
        return self

    @property
    def asked_tokens(self) -> int | None:
        """The completion length asked for: `max_completion_tokens`, or the older `max_tokens`."""
        return self.max_completion_tokens or self.max_tokens

    def to_sampling(self, max_completion_tokens: int) -> SamplingConfig:
        """The engine's sampling parameters, unset fields filled from the server's defaults (`asked_tokens` is
        checked against `max_completion_tokens` before this)."""
        return SamplingConfig(
            # As vLLM does: a temperature this close to 0 is greedy (dividing logits by 1e-45 makes them inf, then NaN).
            temperature=0.0 if self.temperature is None or self.temperature < GREEDY_BELOW else self.temperature,
            top_p=self.top_p or 1.0,
            max_tokens=self.asked_tokens or min(DEFAULT_MAX_TOKENS, max_completion_tokens),
            seed=self.seed or 0,
            # logprobs=true alone still needs the chosen token's logprob, which comes with the top list
            top_logprobs=max(self.top_logprobs or 0, 1) if self.logprobs else 0,
        )


# ---------------------------------------------------------------------------------------------------- responses


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "deltarubric"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprobInfo(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprobInfo]


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    id: str = Field(default_factory=lambda: f"chatcmpl-{uuid.uuid4().hex}")
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[Choice]
    usage: CompletionUsage

    @classmethod
    def from_generation(cls, model: str, gen: Generation, top_logprobs: int | None) -> ChatCompletionResponse:
        """`top_logprobs` None leaves logprobs out; a number keeps that many alternatives per token."""
        logprobs = None
        if top_logprobs is not None:
            logprobs = ChoiceLogprobs(
                content=[
                    TokenLogprobInfo(
                        token=t.token,
                        logprob=t.logprob,
                        bytes=list(t.token.encode()),
                        top_logprobs=[
                            TopLogprob(token=k, logprob=v, bytes=list(k.encode()))
                            for k, v in list(t.top.items())[:top_logprobs]
                        ],
                    )
                    for t in gen.tokens
                ]
            )
        usage = gen.usage
        return cls(
            model=model,
            choices=[
                Choice(message=AssistantMessage(content=gen.text), finish_reason=gen.finish_reason, logprobs=logprobs)
            ],
            usage=CompletionUsage(
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.prompt_tokens + usage.completion_tokens,
            ),
        )
