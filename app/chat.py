"""The OpenAI-compatible service: /v1/models and /v1/chat/completions straight to the backend.

No micro-batching here (the engine behind batches); the same image and token limits as the reward routes, a bound of
`max_queue` generations in flight, and the request timeout, which stops the generation.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import Request

from deltarubric.app.batcher import Saturated
from deltarubric.app.context import INLINE_TEXT_CHARS, ServerContext
from deltarubric.app.errors import EngineError, InputError
from deltarubric.app.pools import PixelLease
from deltarubric.app.protocol import ChatCompletionRequest, ChatCompletionResponse, ChatMessage, ModelCard, ModelList
from deltarubric.rm.backends import Backend, Conversation, Generation, ImagePart, Message, TextPart, VideoPart
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.media import MediaError

INLINE_MESSAGES = 16  # a chat of this many messages or fewer (and a short body) is checked on the event loop


def image_refs(messages: list[ChatMessage]) -> dict[str, str]:
    """The chat request's images (data URLs only: this route fetches nothing by itself), each with its field."""
    refs: dict[str, str] = {}
    for i, m in enumerate(messages):
        for j, p in enumerate(m.content if isinstance(m.content, list) else []):
            if p.type == "text":
                continue
            url = (p.image_url or p.video_url).url  # type: ignore[union-attr]
            if not url.startswith("data:"):
                raise MediaError(f"messages[{i}].content[{j}]: only base64 data URLs are accepted")
            if p.type == "image_url":
                refs.setdefault(url, f"messages[{i}].content[{j}]")
    return refs


def to_conversation(messages: list[ChatMessage], images: dict[str, Any] | None = None) -> Conversation:
    """Wire messages -> Conversation; images from `images` (decoded by the policy), or placeholders for counting."""
    conv: Conversation = []
    for m in messages:
        if m.content is None or isinstance(m.content, str):
            conv.append(Message.text(m.role, m.content or ""))
            continue
        parts: list[Any] = []
        for p in m.content:
            if p.type == "text":
                parts.append(TextPart(p.text or ""))
            elif p.type == "video_url":
                parts.append(VideoPart(p.video_url.url))  # type: ignore[union-attr]
            else:
                parts.append(ImagePart(images[p.image_url.url] if images else None))  # type: ignore[union-attr,arg-type]
        conv.append(Message(m.role, tuple(parts)))
    return conv


class ChatService:
    """One served model name over the judge's backend."""

    def __init__(self, ctx: ServerContext, backend: Backend, model_name: str) -> None:
        self.ctx, self.backend, self.model_name = ctx, backend, model_name
        self.settings = ctx.settings
        self.created = int(time.time())
        self.inflight = 0  # generations running; bounded like the judge queue

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.model_name, created=self.created)])

    def precheck(self, data: Any) -> None:
        """Before validating or templating anything, from the message count alone: a prompt that cannot fit the
        token limit (every message costs its chat-template tokens, even empty) or too many messages is a 413."""
        messages = data.get("messages") if isinstance(data, dict) else None
        if isinstance(messages, list):
            limit = self.settings.max_chat_messages
            self.ctx.tokens.check_message_count(len(messages), self.settings.max_input_tokens, "messages")
            if len(messages) > limit:
                raise InputError(
                    f"{len(messages)} messages in one request; the limit is {limit} (--max-chat-messages)",
                    "messages",
                    413,
                )

    async def chat(self, req: ChatCompletionRequest, request: Request) -> ChatCompletionResponse:
        if req.model != self.model_name:
            raise InputError(f"model {req.model!r} is not served here; use {self.model_name!r}", "model", 404)
        asked, cap = req.asked_tokens, self.settings.max_completion_tokens
        if asked is not None and asked > cap:
            param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
            raise InputError(f"{param} is {asked}; this server allows at most {cap} (--max-completion-tokens)", param)
        refs = image_refs(req.messages)
        media = [p.type for m in req.messages if isinstance(m.content, list) for p in m.content if p.type != "text"]
        self.ctx.check_counts(1, len(media))
        if "video_url" in media and not self.backend.supports_video:
            raise InputError(f"video input is not supported by the {self.backend.name!r} backend here", "messages")
        if self.inflight >= self.settings.max_queue:
            self.ctx.metrics.rejected.inc()
            raise Saturated(f"{self.inflight} chat completions in flight")
        sampling = req.to_sampling(cap)
        # Many messages cost template work even when their text is short: inline only when both are small.
        light = request.state.body_bytes <= INLINE_TEXT_CHARS and len(req.messages) <= INLINE_MESSAGES
        self.inflight += 1
        try:
            async with self.ctx.deadline() as lease:
                gen = await self._generate(req.messages, refs, sampling, light, lease)
        finally:
            self.inflight -= 1
        if gen.error:
            raise EngineError(f"generation failed: {gen.error}")
        top = (req.top_logprobs or 0) if req.logprobs else None
        return ChatCompletionResponse.from_generation(self.model_name, gen, top)

    def _check_text(self, messages: list[ChatMessage]) -> None:
        text = to_conversation(messages)
        self.ctx.tokens.check_placeholders(text, "messages")
        self.ctx.tokens.check(text, self.settings.max_input_tokens, "messages")

    async def _generate(
        self,
        messages: list[ChatMessage],
        refs: dict[str, str],
        sampling: SamplingConfig,
        light: bool,
        lease: PixelLease,
    ) -> Generation:
        """Tokens checked on the text (before decoding any image; in the work pool unless the chat is small), images
        decoded under the budgets, then one generation; a timeout cancels it (a local engine stops at its next
        token)."""
        ctx = self.ctx
        await ctx.cpu(light, self._check_text, messages)
        conv = await ctx.cpu(light, to_conversation, messages, await ctx.policy.images(refs, lease))
        try:
            (gen,) = await self.backend.agenerate([conv], sampling)
        except Exception as e:  # (an engine crash is still answered in the one error shape)
            raise EngineError(f"generation failed: {type(e).__name__}: {e}") from e
        return gen
