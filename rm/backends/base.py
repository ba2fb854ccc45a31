"""The backend interface: batched chat generation returning text, per-token logprobs and usage.

Judges speak only `Conversation`s; each backend converts them to its engine's format. This is the only layer that
knows about engines.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from PIL import Image

from deltarubric.rm.config import SamplingConfig
from deltarubric.rm.types import Usage

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    image: Image.Image


@dataclass(frozen=True)
class VideoPart:
    video: str  # path or URL; decoded by the engine


Part = TextPart | ImagePart | VideoPart


@dataclass(frozen=True)
class Message:
    role: Literal["system", "user", "assistant"]
    content: tuple[Part, ...]

    @classmethod
    def text(cls, role: Literal["system", "user", "assistant"], text: str) -> Message:
        return cls(role, (TextPart(text),))


Conversation = list[Message]


def to_chat_dicts(
    conv: Conversation,
    image: Callable[[Image.Image], dict[str, Any]],
    video: Callable[[str], dict[str, Any]],
    *,
    plain_text: bool = False,
) -> list[dict[str, Any]]:
    """A Conversation as OpenAI-style message dicts; engines differ only in how they want media parts.

    `plain_text` sends a text-only message as a bare string, the form every OpenAI-compatible server accepts.
    """

    def part(p: Part) -> dict[str, Any]:
        if isinstance(p, TextPart):
            return {"type": "text", "text": p.text}
        return image(p.image) if isinstance(p, ImagePart) else video(p.video)  # type: ignore[union-attr]

    return [
        {"role": m.role, "content": m.content[0].text}
        if plain_text and len(m.content) == 1 and isinstance(m.content[0], TextPart)
        else {"role": m.role, "content": [part(p) for p in m.content]}
        for m in conv
    ]


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)  # the most likely alternatives at this position


@dataclass
class Generation:
    text: str = ""
    tokens: list[TokenLogprob] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    error: str | None = None  # set when this conversation failed in the engine (the others still count)


class Backend(abc.ABC):
    """Batched generation. `agenerate` returns one Generation per conversation, in order, never raising per item."""

    name: str = "backend"
    supports_video: bool = False

    @abc.abstractmethod
    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]: ...

    def generate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        return run_sync(self.agenerate(conversations, sampling))


class ThreadedBackend(Backend):
    """A backend whose engine is a blocking, non-thread-safe call: run it off the event loop, one chunk at a time.

    Conversations go to the engine in chunks of `batch_size` (None: all at once). If the engine fails on a chunk,
    that chunk is retried one conversation at a time, so a bad conversation (too long, unprocessable media) fails
    only itself.

    Cancelling `agenerate` (a request timeout) sets `cancelled`, the event of the call in progress: engines that can
    stop mid-generation check it (the transformers backend does, at every token), and chunks not yet started are
    skipped, so the engine is free for the next call instead of finishing work nobody waits for.
    """

    batch_size: int | None = None

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.cancelled = threading.Event()  # the running call's; replaced per call, under the lock

    @abc.abstractmethod
    def generate_blocking(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        """One engine call on one chunk; may raise."""

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        cancel = threading.Event()

        def locked() -> list[Generation]:
            with self._lock:
                self.cancelled = cancel
                size = self.batch_size or max(1, len(conversations))
                out: list[Generation] = []
                for start in range(0, len(conversations), size):
                    if cancel.is_set():  # nobody waits for these any more (also when cancelled while queued)
                        return out + [Generation(error="cancelled")] * (len(conversations) - len(out))
                    out.extend(self._chunk(conversations[start : start + size], sampling))
                return out

        try:
            return await asyncio.to_thread(locked)
        except asyncio.CancelledError:
            cancel.set()
            raise

    def _chunk(self, chunk: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        try:
            return self.generate_blocking(chunk, sampling)
        except Exception as e:
            if len(chunk) == 1:
                return [_failed(e)]
        if self.cancelled.is_set():
            return [Generation(error="cancelled")] * len(chunk)
        return [self._chunk([conv], sampling)[0] for conv in chunk]


def _failed(e: Exception) -> Generation:
    # Recorded on this item's verdict; servers and eval runs keep going.
    log.warning("generation failed: %s: %s", type(e).__name__, e)
    return Generation(error=f"{type(e).__name__}: {e}")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop (notebooks, Gradio)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0]
