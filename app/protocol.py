"""Wire schemas of the OpenAI-compatible routes. Like vLLM, extra fields are accepted (clients send many) and logged."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

log = logging.getLogger(__name__)


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


def completion_response(model: str, gen: Any, top_logprobs: int | None) -> dict[str, Any]:
    """A `chat.completion` object with every field the official openai client's types require.

    `top_logprobs` None leaves logprobs out; a number keeps that many alternatives per token.
    """
    logprobs = None
    if top_logprobs is not None:
        logprobs = {
            "content": [
                {
                    "token": t.token,
                    "logprob": t.logprob,
                    "bytes": list(t.token.encode()),
                    "top_logprobs": [
                        {"token": k, "logprob": v, "bytes": list(k.encode())}
                        for k, v in list(t.top.items())[:top_logprobs]
                    ],
                }
                for t in gen.tokens
            ]
        }
    usage = gen.usage
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": gen.text},
                "finish_reason": gen.finish_reason,
                "logprobs": logprobs,
            }
        ],
        "usage": {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        },
    }
