"""Input-token limits: what a prompt costs after the chat template, counted with the backend's own tokenizer.

Only text is counted here; images are bounded by the pixel limits. A judge request is counted as the judge will send
it: the method's system prompt and every stage's user turn, rendered by rm.prompting (the judge's own renderer).
Text too long to possibly fit (more characters than the limit times the longest token) is refused without being
tokenized, so a hostile megabyte costs no tokenizer time; so are more messages than could fit (each costs the chat
template's tokens around it, measured once), so 40,000 empty messages are refused without templating any. Backends
without a local tokenizer (`openai`: the engine behind counts for itself) are estimated at one token per four UTF-8
bytes.
"""

from __future__ import annotations

import contextlib
import copy
import math
from typing import Any

from PIL import Image

from deltarubric.app.errors import InputError
from deltarubric.rm.backends import Backend, Conversation, ImagePart, TextPart, VideoPart
from deltarubric.rm.prompting import PreparedRequest, system_messages, user_turn
from deltarubric.rm.types import JudgeRequest
from deltarubric.rubrics.prompts import Method

_BYTES_PER_TOKEN_ESTIMATE = 4
# Qwen-VL's media placeholders: typed into text they make the processor expect media that never come (an engine error).
QWEN_PLACEHOLDERS = ("<|image_pad|>", "<|video_pad|>")
_PLACEHOLDER = ImagePart(Image.new("RGB", (1, 1)))  # media are left out of the count; this only fills their slot


def _tokenizer_of(backend: Backend) -> tuple[Any, str | None, tuple[str, ...]]:
    """A private copy of a local backend's tokenizer, its chat template and its media placeholder tokens; (None, None,
    ()) without a local tokenizer. A copy, because the engine's own is reconfigured (padding) by every generate call,
    and a fast tokenizer reconfigured from another thread mid-call fails ("Already borrowed") or mis-pads a batch."""
    processor = getattr(backend, "processor", None)  # transformers
    llm = getattr(backend, "llm", None)  # vllm
    tokenizer = getattr(processor, "tokenizer", None) if processor is not None else None
    if tokenizer is None and llm is not None and hasattr(llm, "get_tokenizer"):
        tokenizer = llm.get_tokenizer()
    if tokenizer is None:
        return None, None, ()
    try:
        own = copy.deepcopy(tokenizer)
    except Exception:  # (an exotic tokenizer: fall back to the estimate rather than share it)
        return None, None, ()
    template = getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    tokens = (getattr(processor, "image_token", None), getattr(processor, "video_token", None))
    placeholders = tuple(t for t in tokens if isinstance(t, str) and t)
    return own, template, placeholders


def _byte_level(tokenizer: Any) -> bool:
    """Whether every token of `tokenizer` stands for at least one byte of text (byte-level BPE, as Qwen's)."""
    try:
        from tokenizers.decoders import ByteLevel
    except ImportError:
        return False
    return isinstance(getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None), ByteLevel)


class TokenCounter:
    def __init__(self, backend: Backend) -> None:
        self.tokenizer, self.chat_template, own = _tokenizer_of(backend)
        self.placeholders = tuple(dict.fromkeys([*QWEN_PLACEHOLDERS, *own]))
        self._max_chars_per_token: int | None = None
        self._byte_level = _byte_level(self.tokenizer)
        # Measured now, at start (tens of milliseconds), not by the first chat request on the event loop.
        self._tokens_per_message = self._measure_tokens_per_message()

    def check_placeholders(self, conv: Conversation, where: str) -> None:
        """Media placeholder tokens typed as text: refused (400) rather than failing in the engine (500)."""
        for i, m in enumerate(conv):
            for p in m.content:
                found = next((t for t in self.placeholders if isinstance(p, TextPart) and t in p.text), None)
                if found:
                    raise InputError(
                        f"{where}[{i}]: the text contains {found}, the model's media placeholder; send media "
                        "as image_url/video_url parts",
                        f"{where}[{i}]",
                    )

    @property
    def max_chars_per_token(self) -> int:
        """Characters in the longest vocabulary entry: no text of more than limit x this fits in `limit` tokens."""
        if self._max_chars_per_token is None:
            vocab = self.tokenizer.get_vocab() if self.tokenizer is not None else {}
            self._max_chars_per_token = max((len(t) for t in vocab), default=_BYTES_PER_TOKEN_ESTIMATE)
        return self._max_chars_per_token

    @property
    def tokens_per_message(self) -> int:
        """A lower bound on the tokens the chat template adds for one more message, whatever its role and however
        empty (Qwen's adds 5: <|im_start|>, role, newline, <|im_end|>, newline; counted as 4); 0 without a local
        tokenizer or when unmeasurable."""
        return self._tokens_per_message

    def _measure_tokens_per_message(self) -> int:
        if self.tokenizer is None:
            return 0

        def count(roles: list[str]) -> int:
            messages = [{"role": r, "content": [{"type": "text", "text": ""}]} for r in roles]
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

        deltas = []
        for role in ("user", "assistant", "system"):
            with contextlib.suppress(Exception):  # a template refusing some order: measure the others
                deltas.append((count(["user", role, role]) - count(["user"])) // 2)  # two more, halved: one's cost
        # One token of margin: a message's text could merge with the template's tokens around it (not with Qwen's
        # special tokens, but a template of plain-text markers might).
        return max(0, min(deltas, default=1) - 1)

    def check_message_count(self, messages: int, limit: int, where: str) -> None:
        """413 when `messages` messages cannot fit in `limit` tokens whatever they say: checked on a count, before
        building or templating anything."""
        least = messages * self.tokens_per_message
        if least > limit:
            raise InputError(
                f"{where}: the prompt is over {least} tokens ({messages} messages) after the chat "
                f"template; the limit is {limit} (--max-input-tokens)",
                where,
                413,
            )

    def excess(self, conv: Conversation, limit: int) -> str | None:
        """None when the conversation's text fits in `limit` tokens after the chat template, else how many it is."""
        if len(conv) * self.tokens_per_message > limit:
            return f"over {len(conv) * self.tokens_per_message} tokens ({len(conv)} messages)"
        texts = [p.text for m in conv for p in m.content if isinstance(p, TextPart)]
        if self.tokenizer is None:
            n = math.ceil(sum(len(t.encode("utf-8", "surrogatepass")) for t in texts) / _BYTES_PER_TOKEN_ESTIMATE)
            return f"about {n} tokens (estimated)" if n > limit else None
        chars = sum(map(len, texts))
        if chars > limit * self.max_chars_per_token:
            return f"over {chars // self.max_chars_per_token} tokens ({chars} characters)"
        messages = [
            {
                "role": m.role,
                "content": [{"type": "text", "text": p.text} for p in m.content if isinstance(p, TextPart)],
            }
            for m in conv
        ]
        try:
            text = self.tokenizer.apply_chat_template(
                messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=True
            )
            # Every byte-level BPE token (Qwen's) covers at least one byte of the text: a prompt of no more bytes
            # than the limit fits without tokenizing it (most judge prompts; a group's 120 pairs are then cheap).
            if self._byte_level and len(text.encode("utf-8", "surrogatepass")) + 1 <= limit:
                return None
            n = len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        except (TypeError, ValueError) as e:  # text the tokenizer cannot take (validated earlier; kept as a 400)
            raise InputError(f"the text cannot be tokenized ({type(e).__name__})") from e
        return f"{n} tokens" if n > limit else None

    def check(self, conv: Conversation, limit: int, where: str) -> None:
        excess = self.excess(conv, limit)
        if excess:
            raise InputError(
                f"{where}: the prompt is {excess} after the chat template; the limit is {limit} (--max-input-tokens)",
                where,
                413,
            )


def judge_conversation(method: Method, req: JudgeRequest) -> Conversation:
    """The text the judge sends for `req`, A shown first: the system prompt and every stage's user turn (later
    stages' checklists come from the model's own bounded replies and are left empty here)."""
    if req.task_type not in method.task_types:
        return []  # the judge refuses it with an error verdict, without a model call
    context = [_PLACEHOLDER for _ in req.images] + [VideoPart(v) for v in req.videos]
    candidates = {side: c.text if c.text is not None else _PLACEHOLDER for side, c in (("a", req.a), ("b", req.b))}
    prepared = PreparedRequest(req, context, candidates)  # type: ignore[arg-type]
    return system_messages(method) + [user_turn(method, stage, prepared, "AB", []) for stage in method.stages]
