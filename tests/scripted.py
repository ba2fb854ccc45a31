"""A backend that answers with hand-written model outputs, for testing parsing, swap bookkeeping and p_a.

Each reply is split into one token per character; a token that is the letter A or B carries top alternatives with
P(A) = `p_letter_a`, so the verdict token has realistic logprobs without a model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from deltarubric.rm.aggregate import flip_winner
from deltarubric.rm.backends.base import Backend, Conversation, Generation, TextPart, TokenLogprob
from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.types import Usage


def user_text(conv: Conversation) -> str:
    """All text of the conversation's last user turn."""
    last = [m for m in conv if m.role == "user"][-1]
    return "".join(p.text for p in last.content if isinstance(p, TextPart))


def all_text(conv: Conversation) -> str:
    return "".join(p.text for m in conv for p in m.content if isinstance(p, TextPart))


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(
        self,
        respond: Callable[[Conversation], str | Exception],
        p_letter_a: float = 0.8,
        confidence: float | None = None,
    ) -> None:
        """`confidence` set: the letter written gets that probability and the other letter the rest, so p_a agrees
        with the text; otherwise every A/B token has P(A) = `p_letter_a` (a judge whose text and logprobs disagree)."""
        self.respond = respond
        self.p_letter_a = p_letter_a
        self.confidence = confidence
        self.calls: list[list[Conversation]] = []

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        self.calls.append(list(conversations))
        out = []
        for conv in conversations:
            reply = self.respond(conv)
            if isinstance(reply, Exception):
                out.append(Generation(error=str(reply)))
                continue
            tokens = (
                self._tokens(reply) if sampling.top_logprobs else []
            )  # like real backends: no logprobs unless asked
            out.append(
                Generation(
                    text=reply,
                    tokens=tokens,
                    usage=Usage(prompt_tokens=len(all_text(conv)), completion_tokens=len(reply)),
                )
            )
        return out

    def _tokens(self, text: str) -> list[TokenLogprob]:
        la, lb = math.log(self.p_letter_a), math.log(1 - self.p_letter_a)
        tokens = []
        for ch in text:
            top = {"A": la, "B": lb} if ch in "AB" else {ch: 0.0}
            if self.confidence is not None and ch in "AB":
                top = {ch: math.log(self.confidence), flip_winner(ch): math.log(1 - self.confidence)}
            tokens.append(TokenLogprob(ch, top.get(ch, 0.0), top))
        return tokens
