"""The backend interface: batched chat generation returning text, per-token logprobs and usage.

Judges speak only `Conversation`s; each backend converts them to its engine's format. This is the only layer that
knows about engines.
"""

from __future__ import annotations

import abc
import asyncio
import threading
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from PIL import Image

from rm.config import SamplingConfig
from rm.types import Usage

T = TypeVar("T")


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

    def close(self) -> None:
        """Release engine resources; the default has none."""


class ThreadedBackend(Backend):
    """A backend whose engine is a blocking, non-thread-safe call: run it off the event loop, one batch at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    @abc.abstractmethod
    def generate_blocking(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]: ...

    async def agenerate(self, conversations: Sequence[Conversation], sampling: SamplingConfig) -> list[Generation]:
        def locked() -> list[Generation]:
            with self._lock:
                return self.generate_blocking(conversations, sampling)

        return await asyncio.to_thread(locked)


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
